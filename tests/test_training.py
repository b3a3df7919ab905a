"""Training: a short toy training learns; a 2-process CPU (gloo) run writes checkpoints;
evaluation uses every test set's own vocabulary."""

import os
import subprocess
import sys

import torch
from detectron2.data import MetadataCatalog

from gsnet.data import GSNetSemanticDatasetMapper, load_class_names
from gsnet.training import GSNetTrainer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_short_toy_training_lowers_the_loss(toy_root, register_root, make_toy_cfg, make_toy_model):
    register_root(str(toy_root))
    cfg = make_toy_cfg("SOLVER.BASE_LR", "0.001")
    model = make_toy_model().train()
    optimizer = GSNetTrainer.build_optimizer(cfg, model)
    mapper = GSNetSemanticDatasetMapper(cfg, True)
    from detectron2.data import DatasetCatalog

    torch.manual_seed(0)
    batch = [mapper(d) for d in DatasetCatalog.get("LandDiscover_50K")[:4]]
    losses = []
    for _ in range(12):
        loss = model(batch)["loss_sem_seg"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_evaluation_uses_each_test_set_vocabulary(
    toy_root, register_root, make_toy_cfg, make_toy_model, monkeypatch
):
    register_root(str(toy_root))
    cfg = make_toy_cfg("DATASETS.TEST", "('FloodNet', 'potsdam_all')")
    model = make_toy_model().eval()
    seen = []
    forward = type(model).forward

    def recording_forward(self, batched_inputs, class_names=None):
        seen.append(list(self.test_class_names))
        return forward(self, batched_inputs, class_names)

    monkeypatch.setattr(type(model), "forward", recording_forward)
    default = list(model.test_class_names)
    results = GSNetTrainer.test(cfg, model)
    assert list(results) == ["FloodNet", "potsdam_all"]
    expected = [load_class_names(MetadataCatalog.get(n).class_json) for n in results]
    assert seen[0] == expected[0] and seen[-1] == expected[1]
    assert all(0 <= results[n]["sem_seg"]["mIoU"] <= 100 for n in results)
    assert model.test_class_names == default


def test_two_process_cpu_training_writes_checkpoints(toy_root, tmp_path):
    output = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO_ROOT, "tools", "train_net.py"),
            "--config-file",
            os.path.join(REPO_ROOT, "configs", "toy.yaml"),
            "--num-gpus",
            "2",
            "OUTPUT_DIR",
            str(output),
            "MODEL.DEVICE",
            "cpu",
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.CHECKPOINT_PERIOD",
            "1",
            "DATASETS.TEST",
            "()",
            "DATALOADER.NUM_WORKERS",
            "0",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "DETECTRON2_DATASETS": str(toy_root)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "World size: 2" in (output / "log.txt").read_text()
    assert (output / "model_0000000.pth").is_file() and (output / "model_final.pth").is_file()
    state = torch.load(output / "model_final.pth", weights_only=False)
    assert state["iteration"] == 1 and "optimizer" in state["trainer"]["_trainer"]
