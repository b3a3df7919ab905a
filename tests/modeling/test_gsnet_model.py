import pytest
import torch

from gsnet.checkpoint import GSNetCheckpointer
from gsnet.training import GSNetTrainer


def _inputs(*sizes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.randint(0, 256, (3, h, w), generator=generator).float(),
            "height": h + 3,
            "width": w - 5,
        }
        for h, w in sizes
    ]


def _train_batch(num_classes=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(2):
        label = torch.randint(0, num_classes, (64, 64), generator=generator)
        label[:8] = 0  # the ignore value of the LandDiscover50K protocol
        batch.append(
            {
                "image": torch.randint(0, 256, (3, 64, 64), generator=generator).float(),
                "sem_seg": label,
            }
        )
    return batch


def test_inference_shapes_on_odd_sizes(toy_model):
    with torch.no_grad():
        outputs = toy_model(_inputs((70, 93), (51, 64)), class_names=["water", "tree", "road"])
    assert [o["sem_seg"].shape for o in outputs] == [(3, 73, 88), (3, 54, 59)]
    assert all(0 <= o["sem_seg"].min() and o["sem_seg"].max() <= 1 for o in outputs)


def test_every_image_of_a_batch_is_used(toy_model):
    images = _inputs((96, 96), (96, 96), seed=1)
    for sliding in (False, True):
        toy_model.sliding_window = sliding
        try:
            with torch.no_grad():
                batch = toy_model(images)
                alone = [toy_model([image])[0] for image in images]
        finally:
            toy_model.sliding_window = False
        for together, single in zip(batch, alone):
            torch.testing.assert_close(together["sem_seg"], single["sem_seg"], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(batch[0]["sem_seg"], batch[1]["sem_seg"])


def test_vocabulary_is_settable_and_cache_follows_it(toy_model):
    image = _inputs((64, 64))
    with torch.no_grad():
        first = toy_model(image, class_names=["water", "tree"])[0]["sem_seg"]
        swapped = toy_model(image, class_names=["tree", "water"])[0]["sem_seg"]
        three = toy_model(image, class_names=["water", "tree", "road"])[0]["sem_seg"]
    torch.testing.assert_close(swapped, first.flip(0))
    assert three.shape[0] == 3
    with pytest.raises(ValueError, match="at least one non-empty name"):
        toy_model.set_test_class_names([])


def test_text_cache_is_dropped_when_training_resumes(make_toy_model):
    model = make_toy_model().eval()
    image = _inputs((64, 64))
    with torch.no_grad():
        before = model(image)[0]["sem_seg"]
    model.train()
    with torch.no_grad():
        for block in model.generalist.clip.transformer.resblocks:
            block.attn.v_proj_weight.mul_(1.5)  # the text tower changes during training
    model.eval()
    with torch.no_grad():
        after = model(image)[0]["sem_seg"]
    assert not torch.allclose(before, after)


def _trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_attention_finetuning_trains_only_q_and_v_weights(make_toy_model):
    model = make_toy_model(
        "MODEL.SEM_SEG_HEAD.CLIP_FINETUNE",
        "attention",
        "MODEL.SEM_SEG_HEAD.DINO_FINETUNE",
        "freeze",
    )
    clip = {n for n in _trainable(model) if n.startswith("generalist.clip.")}
    blocks = len(model.generalist.clip.visual.transformer.resblocks) + len(
        model.generalist.clip.transformer.resblocks
    )
    assert len(clip) == 2 * blocks
    assert all(n.endswith(("attn.q_proj_weight", "attn.v_proj_weight")) for n in clip)
    assert not any(n.startswith("specialist.vit.") for n in _trainable(model))
    assert "specialist.dense_projection.weight" in _trainable(model)
    assert "sem_seg_head.decoder.head.weight" in _trainable(model)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("full", lambda n: "transformer" in n),
        (
            "freezeIMG",
            lambda n: (
                not n.startswith("visual") and ("q_proj" in n or "v_proj" in n or "position" in n)
            ),
        ),
        ("frozen", lambda n: False),
    ],
)
def test_clip_finetuning_modes(make_toy_model, mode, expected):
    model = make_toy_model("MODEL.SEM_SEG_HEAD.CLIP_FINETUNE", mode)
    for name, param in model.generalist.clip.named_parameters():
        assert param.requires_grad == expected(name), name


def test_specialist_attention_finetuning(make_toy_model):
    model = make_toy_model("MODEL.SEM_SEG_HEAD.DINO_FINETUNE", "attention")
    prefix = "specialist.vit."
    trained = {n[len(prefix) :] for n in _trainable(model) if n.startswith(prefix)}
    assert trained == {
        n
        for n, _ in model.specialist.vit.named_parameters()
        if "attn.qkv.weight" in n or n == "pos_embed"
    }


def test_training_step_changes_exactly_the_trainable_parameters(make_toy_cfg, make_toy_model):
    cfg = make_toy_cfg("MODEL.SEM_SEG_HEAD.CLIP_FINETUNE", "attention")
    model = make_toy_model("MODEL.SEM_SEG_HEAD.CLIP_FINETUNE", "attention").train()
    optimizer = GSNetTrainer.build_optimizer(cfg, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = model(_train_batch())["loss_sem_seg"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == _trainable(model)


def test_optimizer_groups_apply_multipliers_by_module(make_toy_cfg, make_toy_model):
    cfg = make_toy_cfg("SOLVER.CLIP_MULTIPLIER", "0.01", "SOLVER.BACKBONE_MULTIPLIER", "0.5")
    model = make_toy_model()
    optimizer = GSNetTrainer.build_optimizer(cfg, model)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    base = cfg.SOLVER.BASE_LR
    q_weight = model.generalist.clip.visual.transformer.resblocks[0].attn.q_proj_weight
    assert lr_of[id(q_weight)] == pytest.approx(base * 0.01)
    assert lr_of[id(model.specialist.vit.blocks[0].attn.qkv.weight)] == pytest.approx(base * 0.5)
    assert lr_of[id(model.specialist.dense_projection.weight)] == pytest.approx(base)
    assert decay_of[id(model.sem_seg_head.layers[0].classes.norm1.weight)] == 0.0
    assert (
        decay_of[id(model.sem_seg_head.layers[0].classes.padding_tokens)] == cfg.SOLVER.WEIGHT_DECAY
    )
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(_trainable(model))


def test_trained_specialist_with_zero_multiplier_is_an_error(make_toy_cfg, make_toy_model):
    cfg = make_toy_cfg("SOLVER.BACKBONE_MULTIPLIER", "0.0")
    with pytest.raises(ValueError, match="BACKBONE_MULTIPLIER"):
        GSNetTrainer.build_optimizer(cfg, make_toy_model())


@pytest.mark.parametrize(
    "opts",
    [
        ("MODEL.SEM_SEG_HEAD.USE_DINO_CORR", "False"),
        (
            "MODEL.SEM_SEG_HEAD.USE_CLIP_CORR",
            "False",
            "MODEL.SEM_SEG_HEAD.DECODER_CLIP_GUIDANCE_DIMS",
            "[0,0]",
            "MODEL.SEM_SEG_HEAD.DECODER_CLIP_GUIDANCE_PROJ_DIMS",
            "[0,0]",
        ),
        ("MODEL.SEM_SEG_HEAD.FUSION_TYPE", "simple_concatenation"),
        ("MODEL.SEM_SEG_HEAD.FUSION_TYPE", "fusion_query"),
        (
            "MODEL.SEM_SEG_HEAD.DECODER_DINO_GUIDANCE_DIMS",
            "[0,0]",
            "MODEL.SEM_SEG_HEAD.DECODER_DINO_GUIDANCE_PROJ_DIMS",
            "[0,0]",
        ),
        ("MODEL.SEM_SEG_HEAD.ATTENTION_TYPE", "full"),
        ("MODEL.PROMPT_ENSEMBLE_TYPE", "imagenet_select"),
    ],
    ids=[
        "clip-only",
        "specialist-only",
        "concat",
        "fusion-query",
        "no-rs-guidance",
        "full-attn",
        "templates",
    ],
)
def test_ablations_train_and_infer(make_toy_model, opts):
    model = make_toy_model(*opts).train()
    model(_train_batch())["loss_sem_seg"].backward()
    model.eval()
    with torch.no_grad():
        assert model(_inputs((64, 80)))[0]["sem_seg"].shape[0] == 5


def test_inconsistent_guidance_dims_are_rejected(make_toy_model):
    with pytest.raises(ValueError, match="DECODER_DINO_GUIDANCE_PROJ_DIMS"):
        make_toy_model("MODEL.SEM_SEG_HEAD.DECODER_DINO_GUIDANCE_DIMS", "[0,0]")


def test_checkpoint_round_trip(tmp_path, make_toy_model):
    source = make_toy_model(seed=1)
    GSNetCheckpointer(source, save_dir=str(tmp_path)).save("model")
    target = make_toy_model(seed=2)
    GSNetCheckpointer(target).load(str(tmp_path / "model.pth"))
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_of_another_architecture_is_refused(tmp_path, make_toy_model):
    GSNetCheckpointer(make_toy_model(), save_dir=str(tmp_path)).save("model")
    other = make_toy_model("MODEL.SEM_SEG_HEAD.NUM_LAYERS", "1")
    with pytest.raises(ValueError, match="does not fit this model"):
        GSNetCheckpointer(other).load(str(tmp_path / "model.pth"))
