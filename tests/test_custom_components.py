"""The README's own-component example (docs/examples/custom_components.py) trains a step."""

import os
import sys

import pytest
import torch

from gsnet.errors import ConfigError
from gsnet.training import GSNetTrainer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO_ROOT, "docs", "examples", "custom_components.py")

OPTS = (
    "MODEL.COMPONENT_MODULES", f"['{EXAMPLE}']",
    "MODEL.SEM_SEG_HEAD.SPECIALIST_ENCODER", "ConvSpecialistEncoder",
    "MODEL.SEM_SEG_HEAD.DECODER_DINO_GUIDANCE_DIMS", "[0,0]",
    "MODEL.SEM_SEG_HEAD.DECODER_DINO_GUIDANCE_PROJ_DIMS", "[0,0]",
    "MODEL.SEM_SEG_HEAD.FUSION_TYPE", "MeanCostFusion",
)  # fmt: skip


def test_own_specialist_and_fusion_train_a_step(make_toy_cfg, make_toy_model):
    model = make_toy_model(*OPTS).train()  # imports the example, which registers both
    custom_components = sys.modules["gsnet_components_custom_components"]
    assert isinstance(model.specialist, custom_components.ConvSpecialistEncoder)
    assert isinstance(model.sem_seg_head.fusion, custom_components.MeanCostFusion)
    optimizer = GSNetTrainer.build_optimizer(make_toy_cfg(*OPTS), model)
    generator = torch.Generator().manual_seed(0)
    batch = [
        {
            "image": torch.randint(0, 256, (3, 64, 64), generator=generator).float(),
            "sem_seg": torch.randint(0, 40, (64, 64), generator=generator),
        }
        for _ in range(2)
    ]
    before = [p.detach().clone() for p in model.specialist.parameters()]
    fusion_before = model.sem_seg_head.fusion.embed.weight.detach().clone()
    model(batch)["loss_sem_seg"].backward()
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(model.specialist.parameters(), before))
    assert not torch.equal(model.sem_seg_head.fusion.embed.weight, fusion_before)
    model.eval()
    with torch.no_grad():
        scores = model([{"image": batch[0]["image"]}], class_names=["road", "tree"])
    assert scores[0]["sem_seg"].shape == (2, 64, 64)


@pytest.mark.parametrize("module", ["no_such_package.components", "missing/components.py"])
def test_a_component_module_that_cannot_be_imported_is_named(make_toy_model, module):
    with pytest.raises(ConfigError, match=f"MODEL.COMPONENT_MODULES names .*{module}"):
        make_toy_model("MODEL.COMPONENT_MODULES", f"['{module}']")
