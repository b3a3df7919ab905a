"""GSNet's additions to Detectron2's config.

Every key GSNet reads is defined here once, with its meaning. The keys of the published GSNet
code (``MODEL.SEM_SEG_HEAD.USE_DINO_CORR``, ``TEST.SLIDING_WINDOW``, ...) are kept with their
published names and defaults so that published YAML files and command lines load unchanged; in
the code they map to role names ("dino" = the remote-sensing specialist encoder).
"""

import torch
from detectron2.config import CfgNode

# The paper's evaluation protocol: the four test sets (each with its own vocabulary), sliding
# windows and 1 x 1 class pooling. ``tools/train_net.py --paper-evaluation`` (scripts/eval.sh),
# tools/compare_precision.py and the benchmark's sliding phase apply it.
PAPER_TEST_SETS = ("FloodNet", "FLAIR_test", "FAST_val", "potsdam_all")
PAPER_EVALUATION_OVERRIDES = (
    "DATASETS.TEST", str(PAPER_TEST_SETS),
    "TEST.SLIDING_WINDOW", "True",
    "MODEL.SEM_SEG_HEAD.POOLING_SIZES", "[1, 1]",
)  # fmt: skip


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
    # Dataset mapper for training: "mask_former_semantic" is the semantic-segmentation mapper
    # (the published name; it selects gsnet.data.GSNetSemanticDatasetMapper).
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
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

    # ---------------------------------------------------------------- model: generalist (CLIP)
    # CLIP architecture: "ViT-B/16" (paper), "ViT-L/14@336px", or "toy" (a narrow 4-layer
    # CLIP for tests and the toy default; same code paths).
    head.CLIP_PRETRAINED = "ViT-B/16"
    # Where CLIP's weights come from when training starts: an open_clip pretrained tag
    # ("openai", downloaded where internet exists), a local file (OpenAI's JIT archive or an
    # open_clip state dict), or "random" (toy runs). Not needed with MODEL.WEIGHTS.
    head.CLIP_WEIGHTS = "openai"
    # Which CLIP parameters train: "attention" (query and value projection weights of every
    # attention block, image and text towers: the paper), "full" (every transformer-block
    # parameter), "prompt" (visual prompt tokens only), "freezeIMG" (text-tower q/v only),
    # anything else: frozen.
    head.CLIP_FINETUNE = "attention"
    # Deep visual prompt tuning: prompt tokens inserted before the first PROMPT_DEPTH image
    # blocks, PROMPT_LENGTH tokens each (0 = off, the paper).
    head.PROMPT_DEPTH = 0
    head.PROMPT_LENGTH = 0

    # ---------------------------------------------------------------- model: specialist (RSIB)
    # Specialist architecture: "vit_base_patch8" (ViT-B/8, DINO layout: the paper) or "toy".
    head.DINO_ARCH = "vit_base_patch8"
    # DINO-style checkpoint of the remote-sensing specialist, needed when training starts;
    # empty: the environment variable RSIB_CKPT (the published code's only way); "random":
    # random initialisation (toy runs). Not needed with MODEL.WEIGHTS.
    head.DINO_WEIGHTS = ""
    # Which specialist parameters train: "freeze" (paper), "attention" (qkv weights and the
    # positional embedding), "full".
    head.DINO_FINETUNE = "freeze"

    # ---------------------------------------------------------------- model: fusion
    # Use the generalist's / the specialist's cost volume (both True: GSNet; one of them:
    # the single-stream ablations).
    head.USE_CLIP_CORR = True
    head.USE_DINO_CORR = True
    # How the two streams meet: "query_guided" (paper), "simple_concatenation" (image and
    # text features concatenated, one 7x7 conv) or "fusion_query" (features fused by a 1x1
    # conv, then one cost volume).
    head.FUSION_TYPE = "query_guided"

    # ---------------------------------------------------------------- model: aggregation
    # Text guidance: template-averaged text embedding (TEXT_GUIDANCE_DIM) -> Linear -> ReLU.
    head.TEXT_GUIDANCE_DIM = 512
    head.TEXT_GUIDANCE_PROJ_DIM = 128
    # Appearance guidance: dense CLIP feature (APPEARANCE_GUIDANCE_DIM) -> 3x3 conv -> ReLU.
    head.APPEARANCE_GUIDANCE_DIM = 512
    head.APPEARANCE_GUIDANCE_PROJ_DIM = 128
    # Aggregator layers (spatial Swin blocks + class attention), heads and width.
    head.NUM_LAYERS = 4
    head.NUM_HEADS = 4
    head.HIDDEN_DIMS = 128
    # Average pooling before class aggregation ([1, 1] with sliding-window evaluation).
    head.POOLING_SIZES = [6, 6]
    # Grid of the cost volume (CLIP tokens per side); the encoders' input sizes derive from it.
    head.FEATURE_RESOLUTION = [24, 24]
    # Swin window size of the spatial aggregation (the second block is shifted by half).
    head.WINDOW_SIZES = 12
    # Class aggregation attention: "linear" (paper) or "full" (softmax).
    head.ATTENTION_TYPE = "linear"

    # ---------------------------------------------------------------- model: decoder
    # Channels of the two up-sampling blocks of the Residual Information Preservation Decoder.
    head.DECODER_DIMS = [64, 32]
    # Input channels of the decoder-guidance projections (both streams).
    head.DECODER_GUIDANCE_DIMS = [256, 128]
    head.DECODER_GUIDANCE_PROJ_DIMS = [32, 16]
    # Per-stream decoder guidance: channels before/after projection. [0, 0] for both keys of a
    # stream removes that stream's guidance (ablation). The published defaults have no CLIP
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
