import torch

from gsnet.modeling.aggregation import (
    ClassAggregation,
    SpatialAggregation,
    linear_attention,
    shifted_window_mask,
)


def test_shifted_window_mask():
    mask = shifted_window_mask((4, 4), window_size=2, shift=1)
    assert mask.shape == (4, 4, 4)
    assert set(mask.unique().tolist()) == {-100.0, 0.0}
    assert torch.all(mask[0] == 0)  # the top-left window holds one region only
    assert torch.all(mask.diagonal(dim1=1, dim2=2) == 0)


def test_linear_attention_matches_its_formula():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 2, 4), torch.randn(2, 7, 2, 4), torch.randn(2, 7, 2, 4)
    fq, fk = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    weights = torch.einsum("nlhd,nshd->nhls", fq, fk)
    expected = torch.einsum("nhls,nshd->nlhd", weights / weights.sum(-1, keepdim=True), v)
    torch.testing.assert_close(linear_attention(q, k, v), expected, atol=1e-4, rtol=1e-4)


def test_spatial_aggregation_shapes_and_guidance_use():
    torch.manual_seed(0)
    layer = SpatialAggregation(dim=8, guidance_dim=4, resolution=(4, 4), num_heads=2, window_size=2)
    x, guidance = torch.randn(2, 3, 8, 4, 4), torch.randn(2, 4, 4, 4)
    out = layer(x, guidance)
    assert out.shape == x.shape
    assert not torch.allclose(out, layer(x, torch.randn(2, 4, 4, 4)))


def test_class_aggregation_padding_is_dropped_and_classes_interact():
    torch.manual_seed(0)
    layer = ClassAggregation(
        dim=8, guidance_dim=4, num_heads=2, attention_type="linear", pooling_size=(2, 2), pad_len=16
    )
    torch.nn.init.normal_(layer.padding_tokens)
    x, text = torch.randn(1, 3, 8, 4, 4), torch.randn(1, 3, 4)
    out = layer(x, text)
    assert out.shape == x.shape
    changed = x.clone()
    changed[:, 2] = torch.randn_like(changed[:, 2])  # another class changes: so does class 0
    assert not torch.allclose(layer(changed, text)[:, 0], out[:, 0])
