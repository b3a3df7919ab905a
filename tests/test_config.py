import glob
import os

import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY

import gsnet  # noqa: F401  (registrations)
from gsnet.config import load_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The keys and values of the published GSNet YAML (configs/vitb_384.yaml of the published code):
# the interface users already type must keep loading.
PUBLISHED_VITB_384 = """
MODEL:
  META_ARCHITECTURE: "GSNet"
  PIXEL_MEAN: [123.675, 116.280, 103.530]
  PIXEL_STD: [58.395, 57.120, 57.375]
  SEM_SEG_HEAD:
    NAME: "GSNetHead"
    IN_FEATURES: ["res2", "res3", "res4"]
    IGNORE_VALUE: 255
    NUM_CLASSES: 40
    TRAIN_CLASS_JSON: "datasets/landdiscover.json"
    TEST_CLASS_JSON: "datasets/potsdam.json"
    CLIP_PRETRAINED: "ViT-B/16"
    PROMPT_DEPTH: 0
    PROMPT_LENGTH: 0
    TEXT_GUIDANCE_DIM: 512
    TEXT_GUIDANCE_PROJ_DIM: 128
    APPEARANCE_GUIDANCE_DIM: 512
    APPEARANCE_GUIDANCE_PROJ_DIM: 128
    DECODER_DIMS: [64, 32]
    DECODER_GUIDANCE_DIMS: [256, 128]
    DECODER_GUIDANCE_PROJ_DIMS: [32, 16]
    USE_CLIP_CORR: True
    USE_DINO_CORR: True
    FUSION_TYPE: "query_guided"
    DECODER_CLIP_GUIDANCE_DIMS: [256,128]
    DECODER_CLIP_GUIDANCE_PROJ_DIMS: [32,16]
    DECODER_DINO_GUIDANCE_DIMS: [256,128]
    DECODER_DINO_GUIDANCE_PROJ_DIMS: [32,16]
    NUM_LAYERS: 2
    NUM_HEADS: 4
    HIDDEN_DIMS: 128
    POOLING_SIZES: [2, 2]
    FEATURE_RESOLUTION: [24, 24]
    WINDOW_SIZES: 12
    ATTENTION_TYPE: "linear"
    CLIP_FINETUNE: "attention"
    DINO_FINETUNE: "freeze"
    DINO_WEIGHTS: ""
  PROMPT_ENSEMBLE_TYPE: "single"
  CLIP_PIXEL_MEAN: [122.7709383, 116.7460125, 104.09373615]
INPUT:
  MIN_SIZE_TRAIN: (384, )
  MIN_SIZE_TRAIN_SAMPLING: "choice"
  MIN_SIZE_TEST: 640
  CROP:
    ENABLED: True
    TYPE: "absolute"
    SIZE: (384, 384)
    SINGLE_CATEGORY_MAX_AREA: 1.0
  COLOR_AUG_SSD: True
  SIZE_DIVISIBILITY: 384
  FORMAT: "RGB"
  DATASET_MAPPER_NAME: "mask_former_semantic"
DATASETS:
  TRAIN: ("LandDiscover_50K",)
  TEST: ("potsdam_all",)
SOLVER:
  IMS_PER_BATCH: 4
  LR_SCHEDULER_NAME: WarmupCosineLR
  BASE_LR: 0.0002
  MAX_ITER: 30000
  BACKBONE_MULTIPLIER: 0.0
  CLIP_MULTIPLIER: 0.01
  OPTIMIZER: "ADAMW"
  WEIGHT_DECAY_EMBED: 0.0
  CLIP_GRADIENTS:
    ENABLED: True
    CLIP_TYPE: "full_model"
    CLIP_VALUE: 0.01
    NORM_TYPE: 2.0
TEST:
  EVAL_PERIOD: 5000
  SLIDING_WINDOW: False
VERSION: 2
"""


def test_project_entries_are_registered():
    assert "GSNet" in META_ARCH_REGISTRY
    assert "GSNetHead" in SEM_SEG_HEADS_REGISTRY


ALL_CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True))


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.MODEL.META_ARCHITECTURE == "GSNet"


def test_paper_config_is_the_whole_experiment():
    cfg = load_config(os.path.join(REPO_ROOT, "configs", "vitb_384.yaml"))
    head = cfg.MODEL.SEM_SEG_HEAD
    assert (head.IGNORE_VALUE, head.NUM_CLASSES) == (0, 40)
    assert cfg.DATASETS.TRAIN == ("LandDiscover_50K",)
    assert (head.NUM_LAYERS, list(head.POOLING_SIZES)) == (2, [2, 2])
    assert cfg.SOLVER.MAX_ITER == 30000 and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.01


@pytest.mark.parametrize(
    "name, train_set, num_classes",
    [
        ("ovrsisbench_dlrsd", "DLRSD_train_sem_seg", 17),
        ("ovrsisbench_isaid", "iSAID_train_sem_seg", 15),
    ],
)
def test_ovrsisbench_configs_train_the_paper_model_on_the_benchmark(name, train_set, num_classes):
    from gsnet.data.class_names import load_class_names

    paper = load_config(os.path.join(REPO_ROOT, "configs", "vitb_384.yaml"))
    cfg = load_config(os.path.join(REPO_ROOT, "configs", "benchmarks", f"{name}.yaml"))
    head = cfg.MODEL.SEM_SEG_HEAD
    assert cfg.DATASETS.TRAIN == (train_set,)
    assert (head.IGNORE_VALUE, head.NUM_CLASSES) == (255, num_classes)
    assert len(load_class_names(head.TRAIN_CLASS_JSON)) == num_classes
    assert head.CLIP_PRETRAINED == paper.MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED
    assert head.DINO_ARCH == paper.MODEL.SEM_SEG_HEAD.DINO_ARCH


def test_published_yaml_and_overrides_load(tmp_path):
    path = tmp_path / "published.yaml"
    path.write_text(PUBLISHED_VITB_384)
    cfg = load_config(str(path))
    # The published scripts' overrides.
    cfg.merge_from_list(
        [
            "MODEL.SEM_SEG_HEAD.IGNORE_VALUE",
            "0",
            "TEST.SLIDING_WINDOW",
            "True",
            "MODEL.SEM_SEG_HEAD.POOLING_SIZES",
            "[1,1]",
            "DATASETS.TEST",
            '("FloodNet",)',
        ]
    )
    assert cfg.TEST.SLIDING_WINDOW and list(cfg.MODEL.SEM_SEG_HEAD.POOLING_SIZES) == [1, 1]
    assert cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE == 0


def _meta_model(cfg):
    from detectron2.modeling import build_model

    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg)


def _parameter_counts(model):
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def test_published_yaml_builds_the_paper_model(tmp_path):
    # Published keys that are now derived (FEATURE_RESOLUTION, *_GUIDANCE_DIM,
    # DECODER_GUIDANCE_DIMS) keep their meaning: the same model as configs/vitb_384.yaml.
    path = tmp_path / "published.yaml"
    path.write_text(PUBLISHED_VITB_384)
    cfg = load_config(str(path))
    model = _meta_model(cfg)
    assert _parameter_counts(model) == (243_988_242, 29_006_865)
    assert model.generalist.input_size == model.specialist.input_size == (384, 384)


@pytest.mark.parametrize(
    "opts, message",
    [
        (
            ["MODEL.SEM_SEG_HEAD.TEXT_GUIDANCE_DIM", "768"],
            "TEXT_GUIDANCE_DIM=768 contradicts the generalist's embedding width 512",
        ),
        (
            ["MODEL.SEM_SEG_HEAD.APPEARANCE_GUIDANCE_DIM", "256"],
            "APPEARANCE_GUIDANCE_DIM=256 contradicts the generalist's embedding width 512",
        ),
        (
            ["MODEL.SEM_SEG_HEAD.GENERALIST_INPUT_SIZE", "[448, 448]"],
            r"FEATURE_RESOLUTION=\[24, 24\] and GENERALIST_INPUT_SIZE=\[448, 448\] disagree",
        ),
        (
            ["MODEL.SEM_SEG_HEAD.DECODER_GUIDANCE_DIMS", "[128, 64]"],
            r"DECODER_GUIDANCE_DIMS=\[128, 64\] contradicts the CLIP encoder's guidance "
            r"widths \[256, 128\]",
        ),
        (
            ["MODEL.SEM_SEG_HEAD.SPECIALIST_INPUT_SIZE", "[320, 320]"],
            r"40 x 40 token grid.*use e.g. \[192, 192\] or \[384, 384\]",
        ),
        (
            ["MODEL.SEM_SEG_HEAD.SPECIALIST_ENCODER", "NoSuchEncoder"],
            r"Unknown MODEL.SEM_SEG_HEAD.SPECIALIST_ENCODER 'NoSuchEncoder'.*"
            r"\[.*'TimmSpecialistEncoder'.*\]",
        ),
        (
            ["MODEL.SEM_SEG_HEAD.FUSION_TYPE", "late_fusion"],
            r"Unknown MODEL.SEM_SEG_HEAD.FUSION_TYPE 'late_fusion'.*'QueryGuidedFusion'",
        ),
        (
            ["MODEL.SEM_SEG_HEAD.DECODER_NAME", "UNet"],
            r"Unknown MODEL.SEM_SEG_HEAD.DECODER_NAME 'UNet'.*\[.*'RIPDecoder'.*\]",
        ),
        (
            ["MODEL.SEM_SEG_HEAD.GENERALIST_ENCODER", "SigLIP"],
            r"Unknown MODEL.SEM_SEG_HEAD.GENERALIST_ENCODER 'SigLIP'.*CLIPGeneralistEncoder",
        ),
    ],
    ids=[
        "text-dim",
        "appearance-dim",
        "input-size",
        "decoder-dims",
        "specialist-grid",
        "specialist-name",
        "fusion-name",
        "decoder-name",
        "generalist-name",
    ],
)
def test_contradicting_or_unknown_settings_are_one_line_errors(opts, message):
    from gsnet.errors import ConfigError

    cfg = load_config(os.path.join(REPO_ROOT, "configs", "vitb_384.yaml"))
    cfg.merge_from_list(opts)
    with pytest.raises(ConfigError, match=message):
        _meta_model(cfg)


def test_prompt_tuning_is_refused_at_load():
    # The published YAMLs set PROMPT_DEPTH / PROMPT_LENGTH 0 (test_published_yaml_*).
    from gsnet.errors import ConfigError

    toy = os.path.join(REPO_ROOT, "configs", "toy.yaml")
    with pytest.raises(ConfigError, match="PROMPT_LENGTH > 0"):
        load_config(toy, ["MODEL.SEM_SEG_HEAD.PROMPT_LENGTH", "4"])
