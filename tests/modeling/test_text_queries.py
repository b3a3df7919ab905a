import pytest
import torch

from gsnet.modeling.text_queries import TextQueries


class CountingEncoder:
    """A stand-in text tower: embeds token ids deterministically and counts calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, tokens):
        self.calls += 1
        return torch.nn.functional.one_hot(tokens[:, 1] % 16, 16).float() + 0.01 * tokens[:, :16]


def test_synonyms_use_the_first_name():
    queries = TextQueries()
    assert torch.equal(queries.tokenize(["road, street"]), queries.tokenize(["road"]))


def test_too_long_name_raises():
    with pytest.raises(ValueError, match="too long for the text encoder"):
        TextQueries().tokenize(["word " * 80])


def test_cache_is_keyed_by_vocabulary():
    queries, encoder = TextQueries(), CountingEncoder()
    first = queries(["water", "tree"], encoder, device="cpu", use_cache=True)
    again = queries(["water", "tree"], encoder, device="cpu", use_cache=True)
    other = queries(["tree", "water"], encoder, device="cpu", use_cache=True)
    assert encoder.calls == 2 and again is first
    torch.testing.assert_close(other, first.flip(0))
    queries.clear_cache()
    queries(["water", "tree"], encoder, device="cpu", use_cache=True)
    assert encoder.calls == 3


def test_training_never_uses_the_cache():
    queries, encoder = TextQueries(), CountingEncoder()
    queries(["water"], encoder, device="cpu", use_cache=True)
    queries(["water"], encoder, device="cpu", use_cache=False)
    queries(["water"], encoder, device="cpu", use_cache=False)
    assert encoder.calls == 3


def test_several_templates_are_averaged_and_normalised():
    queries = TextQueries(prompt_ensemble_type="imagenet_select")
    out = queries(["water", "tree"], CountingEncoder(), device="cpu", use_cache=False)
    assert out.shape == (2, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
