"""GSNet's additions to Detectron2's config.

Every key GSNet reads is defined here once, with its meaning. The keys of the published GSNet
code (``MODEL.SEM_SEG_HEAD.USE_DINO_CORR``, ``TEST.SLIDING_WINDOW``, ...) are kept with their
published names and defaults so that published YAML files and command lines load unchanged; in
the code they map to role names ("dino" = the remote-sensing specialist encoder).
"""

import os
import re

import torch
import yaml
from detectron2.config import CfgNode, get_cfg

from .errors import ConfigError

# The paper's evaluation protocol: the four test sets (each with its own vocabulary), sliding
# windows and 1 x 1 class pooling. ``tools/train_net.py --paper-evaluation`` (scripts/eval.sh),
# tools/compare_precision.py and the benchmark's sliding phase apply it.
# A key of the config (MODEL.DEVICE), as command lines write the KEY VALUE overrides.
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")
PAPER_TEST_SETS = ("FloodNet", "FLAIR_test", "FAST_val", "potsdam_all")
PAPER_EVALUATION_OVERRIDES = (
    "DATASETS.TEST", str(PAPER_TEST_SETS),
    "TEST.SLIDING_WINDOW", "True",
    "MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1, 1]",
)  # fmt: skip
# OVRSISBench's evaluation protocol (RSKT-Seg's eval.sh): the eight test sets, each with its
# own vocabulary, whole-image inference and 1 x 1 class pooling.
OVRSISBENCH_TEST_SETS = (
    "DLRSD_all_sem_seg", "iSAID_all_sem_seg", "Potsdam_all_sem_seg", "Vaihingen_all_sem_seg",
    "LoveDA_all_sem_seg", "uavid_all_sem_seg", "UDD5_all_sem_seg", "VDD_all_sem_seg",
)  # fmt: skip
OVRSISBENCH_EVALUATION_OVERRIDES = (
    "DATASETS.TEST", str(OVRSISBENCH_TEST_SETS),
    "TEST.SLIDING_WINDOW", "False",
    "MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1, 1]",
)  # fmt: skip
# The named evaluation suites of ``tools/train_net.py --suite`` (scripts/eval.sh --suite).
EVALUATION_SUITES = {
    "paper": PAPER_EVALUATION_OVERRIDES,
    "ovrsisbench": OVRSISBENCH_EVALUATION_OVERRIDES,
}


def evaluation_overrides(suite):
    """The config overrides of an evaluation suite.

    Args:
        suite (str): a name of :data:`EVALUATION_SUITES`, or registered dataset names separated
            by commas, which are evaluated with the paper's protocol (sliding windows, 1 x 1
            class pooling), each with its own vocabulary.

    Returns:
        list[str]: KEY VALUE overrides, for ``cfg.merge_from_list``.
    """
    if suite in EVALUATION_SUITES:
        return list(EVALUATION_SUITES[suite])
    names = tuple(name.strip() for name in suite.split(",") if name.strip())
    if not names:
        raise ConfigError(
            f"Evaluation suite {suite!r} names no dataset; give one of "
            f"{', '.join(EVALUATION_SUITES)} or registered names separated by commas."
        )
    return list(PAPER_EVALUATION_OVERRIDES[2:]) + ["DATASETS.TEST", str(names)]


def load_config(config_file: str, opts=(), *, device: str | None = None) -> CfgNode:
    """Detectron2's config with GSNet's keys, a YAML file and ``KEY VALUE`` overrides merged.

    Args:
        config_file: a YAML file (its ``_BASE_`` chain is followed).
        opts: ["KEY", "VALUE", ...] overrides, as Detectron2's command lines take them.
        device: overrides MODEL.DEVICE.
    Raises:
        ConfigError: the file is missing or does not load, or an override does not apply.
    """
    if not os.path.isfile(config_file):
        raise ConfigError(f"Config file not found: {config_file}. Give a YAML file of configs/.")
    cfg = get_cfg()
    add_gsnet_config(cfg)
    try:
        cfg.merge_from_file(config_file)
        cfg.merge_from_list([str(item) for item in opts])
    except (OSError, KeyError, ValueError, AssertionError, yaml.YAMLError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise ConfigError(
            f"The config does not load: {message}. Check the config file {config_file} and the "
            "KEY VALUE overrides (the keys are defined in Detectron2's defaults and "
            "gsnet/config.py)."
        ) from error
    if device is not None:
        cfg.MODEL.DEVICE = device
    if cfg.MODEL.SEM_SEG_HEAD.PROMPT_LENGTH > 0:
        raise ConfigError(
            "Visual prompt tuning (MODEL.SEM_SEG_HEAD.PROMPT_LENGTH > 0) is not supported: "
            f"set PROMPT_LENGTH 0 (the paper's setting) in {config_file} or the overrides."
        )
    return cfg


def add_gsnet_config(cfg):
    """Add GSNet's keys to a Detectron2 config (in place)."""
    # Detectron2 defaults to "cuda"; GSNet also runs on CPU-only machines.
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    # Weight files (MODEL.WEIGHTS, CLIP_WEIGHTS, DINO_WEIGHTS) are read with torch's safe
    # loading: tensors, containers and gsnet.checkpoint.SAFE_PICKLE_GLOBALS (NumPy scalars and
    # arrays, argparse.Namespace). True reads any other object with unrestricted unpickling,
    # which runs whatever code the file carries: only for files one trusts.
    cfg.MODEL.ALLOW_UNSAFE_UNPICKLING = False
    # ---------------------------------------------------------------- input / data
    # Dataset descriptor files (YAML or JSON, see gsnet/data/descriptors.py) whose datasets are
    # registered before DATASETS.TRAIN / DATASETS.TEST are read; paths absolute or relative to
    # the current directory or the repository root.
    cfg.DATASETS.DESCRIPTORS = ()
    # SSD-style colour jitter (brightness, contrast, saturation, hue) on training images.
    cfg.INPUT.COLOR_AUG_SSD = False
    # Random crops are retried (up to 10 times) until no single category covers more than this
    # fraction of the crop; 1.0 disables the constraint (a plain random crop).
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Pad training samples at the bottom/right to this size (image value 128, label = ignore);
    # -1 disables. The paper pads every sample to the 384 x 384 crop.
    cfg.INPUT.SIZE_DIVISIBILITY = -1

    # ---------------------------------------------------------------- solver
    # AdamW ("ADAMW") or SGD ("SGD").
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Weight decay of embedding parameters (nn.Embedding weights).
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # LR multiplier of the specialist encoder's parameters (matched by module, not by name).
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # LR multiplier of every CLIP (generalist image tower + text tower) parameter.
    cfg.SOLVER.CLIP_MULTIPLIER = 0.01
    # Autocast precision of training when SOLVER.AMP.ENABLED: "bfloat16" (CPU with AVX512-BF16
    # or GPU) or "float16" (CUDA only, with a gradient scaler). The paper trains in fp32.
    cfg.SOLVER.AMP.PRECISION = "bfloat16"

    # ---------------------------------------------------------------- model: input
    cfg.MODEL.MASK_FORMER = CfgNode()
    # Images of a batch are padded at the bottom/right to a multiple of this (after
    # normalisation, value 0) before being resized to the encoders' input size.
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32
    # Normalisation applied to the image fed to BOTH encoders (CLIP's statistics, 0-255 scale).
    cfg.MODEL.CLIP_PIXEL_MEAN = [122.7709383, 116.7460125, 104.09373615]
    cfg.MODEL.CLIP_PIXEL_STD = [68.5005327, 66.6321579, 70.3231630]

    # ---------------------------------------------------------------- model: text queries
    head = cfg.MODEL.SEM_SEG_HEAD
    # JSON lists of class names: the training vocabulary and the default inference vocabulary.
    # Evaluating a registered dataset uses that dataset's own class JSON instead.
    head.TRAIN_CLASS_JSON = "datasets/landdiscover.json"
    head.TEST_CLASS_JSON = "datasets/landdiscover.json"
    # Prompt templates: "single" ("A photo of a {} in the scene"), "imagenet" (80 templates)
    # or "imagenet_select" (a subset); several templates are averaged per class.
    cfg.MODEL.PROMPT_ENSEMBLE_TYPE = "single"

    # ---------------------------------------------------------------- model: components
    # Python modules (dotted names or .py files) imported before the model is built, so that
    # components they register (see README, "Your own component") can be named below.
    cfg.MODEL.COMPONENT_MODULES = []

    # ---------------------------------------------------------------- model: generalist (CLIP)
    # Registered generalist encoder (gsnet.modeling.generalist.GENERALIST_REGISTRY).
    head.GENERALIST_ENCODER = "CLIPGeneralistEncoder"
    # CLIP architecture: the published "ViT-B/16" (paper), "ViT-L/14@336px", "toy" (a narrow
    # CLIP for tests and the toy default), or any open_clip model name with a ViT image tower
    # ("ViT-B-32", "ViT-L-14", ...; open_clip.list_models()).
    head.CLIP_PRETRAINED = "ViT-B/16"
    # Where CLIP's weights come from when training starts: an open_clip pretrained tag
    # ("openai", downloaded where internet exists), a local file (OpenAI's JIT archive or an
    # open_clip state dict), or "random" (toy runs). Not needed with MODEL.WEIGHTS.
    head.CLIP_WEIGHTS = "openai"
    # Pixels (h, w) the generalist encodes; the cost-volume grid is this / the patch size.
    # Empty: FEATURE_RESOLUTION x patch if that is set, else the architecture's own size.
    head.GENERALIST_INPUT_SIZE = []
    # Which CLIP parameters train: "attention" (query and value projection weights of every
    # attention block, image and text towers: the paper), "full" (every transformer-block
    # parameter), "freezeIMG" (text-tower q/v only), anything else: frozen.
    head.CLIP_FINETUNE = "attention"

    # ---------------------------------------------------------------- model: specialist (RSIB)
    # Registered specialist encoder (gsnet.modeling.specialist.SPECIALIST_REGISTRY).
    head.SPECIALIST_ENCODER = "TimmSpecialistEncoder"
    # Specialist architecture: the published "vit_base_patch8" (ViT-B/8, DINO layout: the
    # paper), "toy", or any timm ViT name ("vit_base_patch14_dinov2",
    # "vit_base_patch14_reg4_dinov2", "vit_large_patch16_dinov3", ...).
    head.DINO_ARCH = "vit_base_patch8"
    # Specialist weights, needed when training starts: a DINO-style checkpoint or a timm state
    # dict (a file), "timm" (timm's pretrained weights of DINO_ARCH, e.g.
    # "vit_large_patch16_dinov3.sat493m"; downloaded where internet exists), "random" (toy
    # runs), or empty: the environment variable RSIB_CKPT (the published code's only way). Not
    # needed with MODEL.WEIGHTS.
    head.DINO_WEIGHTS = ""
    # Pixels (h, w) the specialist encodes; its token grid must be a whole multiple or
    # fraction of the cost-volume grid. Empty: the generalist's input size.
    head.SPECIALIST_INPUT_SIZE = []
    # Which specialist parameters train: "freeze" (paper), "attention" (qkv weights and the
    # positional embedding), "full".
    head.DINO_FINETUNE = "freeze"

    # ---------------------------------------------------------------- model: fusion
    # Use the generalist's / the specialist's cost volume (both True: GSNet; one of them:
    # the single-stream ablations).
    head.USE_CLIP_CORR = True
    head.USE_DINO_CORR = True
    # Registered fusion of the two streams (gsnet.modeling.fusion.FUSION_REGISTRY):
    # "query_guided" (paper), "simple_concatenation" (image and text features concatenated,
    # one 7x7 conv) or "fusion_query" (features fused by a 1x1 conv, then one cost volume).
    head.FUSION_TYPE = "query_guided"

    # ---------------------------------------------------------------- model: aggregation
    # Text guidance: template-averaged text embedding -> Linear -> ReLU; appearance guidance:
    # dense generalist feature -> 3x3 conv -> ReLU. The input widths (*_GUIDANCE_DIM) are the
    # generalist's embedding width: -1 derives them, 0 turns that guidance off, any other value
    # must equal the derived one (published YAMLs set 512).
    head.TEXT_GUIDANCE_DIM = -1
    head.TEXT_GUIDANCE_PROJ_DIM = 128
    head.APPEARANCE_GUIDANCE_DIM = -1
    head.APPEARANCE_GUIDANCE_PROJ_DIM = 128
    # Aggregator layers (spatial Swin blocks + class attention), heads and width.
    head.NUM_LAYERS = 4
    head.NUM_HEADS = 4
    head.HIDDEN_DIMS = 128
    # Average pooling before class aggregation ([1, 1] with sliding-window evaluation).
    head.POOLING_SIZES = [6, 6]
    # Grid of the cost volume (generalist tokens per side): the published way to set the
    # generalist's input size (grid x patch). Empty: derived from GENERALIST_INPUT_SIZE; set
    # together with it, the two must agree.
    head.FEATURE_RESOLUTION = []
    # Swin window size of the spatial aggregation (the second block is shifted by half).
    head.WINDOW_SIZES = 12
    # Class aggregation attention: "linear" (paper) or "full" (softmax).
    head.ATTENTION_TYPE = "linear"

    # ---------------------------------------------------------------- model: decoder
    # Registered decoder (gsnet.modeling.decoder.DECODER_REGISTRY).
    head.DECODER_NAME = "RIPDecoder"
    # Channels of the two up-sampling blocks of the Residual Information Preservation Decoder.
    head.DECODER_DIMS = [64, 32]
    # Input channels of the decoder-guidance projections: the encoders' guidance widths
    # (DECODER_*_GUIDANCE_DIMS below). Empty: derived; set (published YAMLs), it must agree.
    head.DECODER_GUIDANCE_DIMS = []
    # Per-stream decoder guidance: channels of the encoder's guidance maps (2x and 4x the
    # cost-volume grid) and after the decoder's projection. [0, 0] for both keys of a stream
    # removes that stream's guidance (ablation). The published defaults have no CLIP
    # guidance; configs/Base-GSNet.yaml turns it on.
    head.DECODER_CLIP_GUIDANCE_DIMS = [0, 0]
    head.DECODER_CLIP_GUIDANCE_PROJ_DIMS = [0, 0]
    head.DECODER_DINO_GUIDANCE_DIMS = [256, 128]
    head.DECODER_DINO_GUIDANCE_PROJ_DIMS = [32, 16]
    # Training loss: binary cross-entropy over all classes. True (published): ignored pixels
    # stay in the mean with all-zero targets; False: ignored pixels are left out.
    head.LOSS_INCLUDES_IGNORED = True

    # ---------------------------------------------------------------- test
    # Sliding-window inference (all reported numbers): resize to SLIDING_WINDOW_RESOLUTION,
    # windows of SLIDING_WINDOW_SIZE every SLIDING_WINDOW_STRIDE pixels plus one global view.
    cfg.TEST.SLIDING_WINDOW = False
    cfg.TEST.SLIDING_WINDOW_SIZE = 384
    cfg.TEST.SLIDING_WINDOW_STRIDE = 256  # int(384 * (1 - 0.333)), as published
    cfg.TEST.SLIDING_WINDOW_RESOLUTION = [640, 640]
    # Inference precision: "float32" (the paper), or autocast to "bfloat16" / "float16".
    cfg.TEST.PRECISION = "float32"

    # ---------------------------------------------------------------- published, ignored
    # Keys that the published YAML files set but that select nothing here; accepted so that
    # those files load, and otherwise ignored. INPUT.DATASET_MAPPER_NAME: training always uses
    # gsnet.data.GSNetSemanticDatasetMapper. DECODER_GUIDANCE_PROJ_DIMS: each stream has its
    # own DECODER_*_GUIDANCE_PROJ_DIMS. PROMPT_DEPTH / PROMPT_LENGTH: visual prompt tuning,
    # which the published code never trained; load_config refuses PROMPT_LENGTH > 0.
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    head.DECODER_GUIDANCE_PROJ_DIMS = [32, 16]
    head.PROMPT_DEPTH = 0
    head.PROMPT_LENGTH = 0
