#!/usr/bin/env python
r"""Compare this project's GSNet with the published code, on the same random weights.

    python tools/compare_published.py --published /path/to/GSNet [--output report.json] \
        [--seed 0] [--device cpu] [--threads 2]

--published is a checkout of the published code (github.com/yecy749/GSNet); nothing of it is
copied. Both models are built at the paper configuration (each side's configs/vitb_384.yaml) in
fp32:

1. The published model is built in a separate process (its package registers Detectron2 names
   that this project's package also registers) as its train_net.py does, with the
   command-line overrides of its scripts/train.sh and scripts/eval.sh. Its CLIP loader reads a
   random CLIP ViT-B/16 file in OpenAI's layout (and rounds it through fp16, as it does with
   OpenAI's file), its specialist loader a random DINO ViT-B/8 checkpoint (RSIB_CKPT); every
   other parameter (fusion, aggregation with its class padding tokens, decoder, guidance
   projections) gets random values, norms included (weights around 1, non-zero biases). Its
   state dict is saved as a Detectron2 checkpoint in the published key layout.
2. This project's model is built from configs/vitb_384.yaml (build_model) and loads that file
   with GSNetCheckpointer, as a user loads the released checkpoint.
3. Both run the same fixed random inputs (Detectron2-style batched inputs): plain inference of
   a 448 x 576 image and of a 430 x 570 one (not a multiple of 32: padded), sliding-window
   inference (TEST.SLIDING_WINDOW True, POOLING_SIZES [1, 1], the paper's protocol) of a
   640 x 800 image with scores requested at 512 x 640, and one training forward/backward
   (batch of 2 images, 384 x 384, labels of the 40 training classes, 0 ignored).

Printed: a markdown table of the checks (head logits, captured at the models' sem_seg_head,
and final scores: max. abs. difference; training loss: relative; gradients of every trainable
tensor, paired by value: worst relative difference of their norms; parameter counts) with their
tolerances, then the parameter counts, the losses and the worst gradient differences (norms and
||dg|| / ||g||, naming the tensor). Exit status 0 when every check is within its tolerance, 1
otherwise (also when this project's model cannot load the published-layout checkpoint), 2 for
an unusable --published checkout or --output folder, or a package the published code needs
but is missing. The published code runs unchanged: on the CPU its ``.cuda()`` calls are made no-ops
in its process. Takes minutes on a CPU (two full-size models, each built twice).
"""

import argparse
import concurrent.futures
import contextlib
import gc
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOL = Path(__file__).name
CHECK_FAILED_STATUS = 1

# This project's paper configuration.
PROJECT_CONFIG = REPO_ROOT / "configs" / "vitb_384.yaml"
# What the tool reads or imports of a published checkout.
PUBLISHED_CONFIG = "configs/vitb_384.yaml"
PUBLISHED_FILES = (
    "gs_net/__init__.py",
    "gs_net/GSNet.py",
    "gs_net/config.py",
    "gs_net/third_party/clip.py",
    "gs_net/third_party/model_vpt.py",
    "gs_net/vision_transformer.py",
    "gs_net/modeling/transformer/GSNetPredictor.py",
    PUBLISHED_CONFIG,
    "datasets/landdiscover.json",
    "datasets/potsdam.json",
)
# The published scripts/train.sh set these on its command line (its YAML says IGNORE_VALUE 255);
# its class-name paths are made absolute because the published code opens them relative to the
# current directory.
PUBLISHED_TRAIN_CLASS_JSON = "datasets/landdiscover.json"
PUBLISHED_TEST_CLASS_JSON = "datasets/potsdam.json"
PUBLISHED_IGNORE_VALUE = 0
# The published scripts/eval.sh's overrides (the paper's protocol), applied to both models.
SLIDING_WINDOW_OVERRIDES = (
    "TEST.SLIDING_WINDOW",
    "True",
    "MODEL.SEM_SEG_HEAD.POOLING_SIZES",
    "[1, 1]",
)

# Tolerances: probabilities and logits (max. abs.), loss and gradients (relative).
SCORE_TOLERANCE = 1e-4
LOGIT_TOLERANCE = 1e-4
LOSS_TOLERANCE = 1e-6
GRADIENT_TOLERANCE = 1e-3
# Gradients are compared relative to their norm, but at least to this fraction of the largest
# tensor's gradient norm: below it a gradient is the rounding noise of an analytically zero
# one (the Swin blocks' key biases: softmax ignores what they add to all of a query's logits).
GRADIENT_NOISE_FLOOR = 1e-7

# Inputs: (height, width) of the plain-inference images; the sliding-window image and the
# size its scores are asked at (a test-mapper image of a 512 x 640 file); the training batch.
PLAIN_IMAGE_SIZES = ((448, 576), (430, 570))
SLIDING_IMAGE_SIZE = (640, 800)
SLIDING_OUTPUT_SIZE = (512, 640)
TRAIN_IMAGE_SIZE = (384, 384)
TRAIN_BATCH_SIZE = 2
TRAIN_NUM_CLASSES = 40  # LandDiscover50K, NUM_CLASSES of both configs

# Geometry of the weight files the published loaders read: OpenAI's CLIP ViT-B/16 (224 px) and
# a DINO ViT-B/8 (224 px).
CLIP_VIT_B16 = {
    "vision_width": 768,
    "vision_layers": 12,
    "patch_size": 16,
    "grid": 14,
    "embed_dim": 512,
    "text_width": 512,
    "text_layers": 12,
    "context_length": 77,
    "vocab_size": 49408,
}
DINO_VIT_B8 = {"width": 768, "depth": 12, "patch_size": 8, "grid": 28}

# Seed offsets of the independent random streams (inputs, CLIP file, DINO file, the rest).
INPUT_STREAM, CLIP_STREAM, DINO_STREAM, HEAD_STREAM = range(4)
# Prefixes of the published modules whose weights come from the two files.
PUBLISHED_CLIP_PREFIX = "sem_seg_head.predictor.clip_model."
PUBLISHED_DINO_PREFIX = "dino_model."

logger = logging.getLogger("compare_published")
# gsnet is imported inside the functions of this process only: the published model's process
# imports this module too, and gsnet's GSNet and GSNetHead would take the Detectron2 registry
# names that the published code registers.


# ---------------------------------------------------------------------------- random weights
def random_generator(seed, stream):
    return torch.Generator().manual_seed(seed * 16 + stream)


def random_tensor(name, shape, generator):
    """Random, non-default values for the parameter ``name`` of ``shape``, scaled to keep
    activations of order one: matrices and convolution kernels N(0, 1 / fan-in); 1-D weights
    (norm scales) 1 + N(0, 0.2^2); other tensors of rank >= 2 (embeddings, tokens, projections)
    N(0, 1 / last dimension); biases and the remaining vectors N(0, 0.2^2)."""
    shape = tuple(shape)
    values = torch.randn(shape, generator=generator)
    if len(shape) >= 2 and name.endswith("weight"):
        return values / math.sqrt(math.prod(shape[1:]))
    if len(shape) == 1 and name.endswith("weight"):
        return 1 + 0.2 * values
    if len(shape) >= 2:
        return values / math.sqrt(shape[-1])
    return 0.2 * values


def _residual_block_shapes(prefix, width):
    """OpenAI CLIP's ResidualAttentionBlock (packed in-projection)."""
    return {
        f"{prefix}attn.in_proj_weight": (3 * width, width),
        f"{prefix}attn.in_proj_bias": (3 * width,),
        f"{prefix}attn.out_proj.weight": (width, width),
        f"{prefix}attn.out_proj.bias": (width,),
        f"{prefix}ln_1.weight": (width,),
        f"{prefix}ln_1.bias": (width,),
        f"{prefix}mlp.c_fc.weight": (4 * width, width),
        f"{prefix}mlp.c_fc.bias": (4 * width,),
        f"{prefix}mlp.c_proj.weight": (width, 4 * width),
        f"{prefix}mlp.c_proj.bias": (width,),
        f"{prefix}ln_2.weight": (width,),
        f"{prefix}ln_2.bias": (width,),
    }


def openai_clip_state_dict(generator, dims=CLIP_VIT_B16):
    """A random CLIP state dict in the layout of OpenAI's ViT checkpoints (fp32; the published
    loader rounds what OpenAI keeps in fp16), with the integer entries input_resolution,
    context_length and vocab_size of OpenAI's files."""
    vision, text = dims["vision_width"], dims["text_width"]
    shapes = {
        "visual.class_embedding": (vision,),
        "visual.positional_embedding": (dims["grid"] ** 2 + 1, vision),
        "visual.proj": (vision, dims["embed_dim"]),
        "visual.conv1.weight": (vision, 3, dims["patch_size"], dims["patch_size"]),
        "visual.ln_pre.weight": (vision,),
        "visual.ln_pre.bias": (vision,),
        "visual.ln_post.weight": (vision,),
        "visual.ln_post.bias": (vision,),
        "positional_embedding": (dims["context_length"], text),
        "text_projection": (text, dims["embed_dim"]),
        "logit_scale": (),
        "token_embedding.weight": (dims["vocab_size"], text),
        "ln_final.weight": (text,),
        "ln_final.bias": (text,),
    }
    for index in range(dims["vision_layers"]):
        shapes.update(_residual_block_shapes(f"visual.transformer.resblocks.{index}.", vision))
    for index in range(dims["text_layers"]):
        shapes.update(_residual_block_shapes(f"transformer.resblocks.{index}.", text))
    state = {name: random_tensor(name, shape, generator) for name, shape in shapes.items()}
    state["input_resolution"] = torch.tensor(dims["patch_size"] * dims["grid"])
    state["context_length"] = torch.tensor(dims["context_length"])
    state["vocab_size"] = torch.tensor(dims["vocab_size"])
    return state


def dino_state_dict(generator, dims=DINO_VIT_B8):
    """A random ViT state dict in DINO's layout (qkv bias; no classifier)."""
    width, patch = dims["width"], dims["patch_size"]
    shapes = {
        "cls_token": (1, 1, width),
        "pos_embed": (1, dims["grid"] ** 2 + 1, width),
        "patch_embed.proj.weight": (width, 3, patch, patch),
        "patch_embed.proj.bias": (width,),
        "norm.weight": (width,),
        "norm.bias": (width,),
    }
    for index in range(dims["depth"]):
        prefix = f"blocks.{index}."
        shapes.update({
            f"{prefix}norm1.weight": (width,),
            f"{prefix}norm1.bias": (width,),
            f"{prefix}attn.qkv.weight": (3 * width, width),
            f"{prefix}attn.qkv.bias": (3 * width,),
            f"{prefix}attn.proj.weight": (width, width),
            f"{prefix}attn.proj.bias": (width,),
            f"{prefix}norm2.weight": (width,),
            f"{prefix}norm2.bias": (width,),
            f"{prefix}mlp.fc1.weight": (4 * width, width),
            f"{prefix}mlp.fc1.bias": (4 * width,),
            f"{prefix}mlp.fc2.weight": (width, 4 * width),
            f"{prefix}mlp.fc2.bias": (width,),
        })  # fmt: skip
    return {name: random_tensor(name, shape, generator) for name, shape in shapes.items()}


def write_torchscript_state(state, path):
    """Save ``state`` as a TorchScript archive whose state_dict() returns it, as OpenAI's CLIP
    files are read (torch.jit.load(...).state_dict(), .input_resolution)."""
    root = torch.nn.Module()
    for key, value in state.items():
        *path_to_module, leaf = key.split(".")
        module = root
        for name in path_to_module:
            if not hasattr(module, name):
                module.add_module(name, torch.nn.Module())
            module = getattr(module, name)
        module.register_buffer(leaf, value)
    torch.jit.script(root).save(str(path))


# ---------------------------------------------------------------------------- inputs
def make_inputs(seed):
    """The fixed inputs, as Detectron2's mappers deliver them (uint8 images (3, H, W), int64
    labels (H, W)): {"plain": [batch, ...], "sliding": batch, "train": batch}."""
    generator = random_generator(seed, INPUT_STREAM)

    def image(height, width):
        return torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)

    plain = [[{"image": image(h, w), "height": h, "width": w}] for h, w in PLAIN_IMAGE_SIZES]
    height, width = SLIDING_OUTPUT_SIZE
    sliding = [{"image": image(*SLIDING_IMAGE_SIZE), "height": height, "width": width}]
    train = [
        {
            "image": image(*TRAIN_IMAGE_SIZE),
            "sem_seg": torch.randint(0, TRAIN_NUM_CLASSES, TRAIN_IMAGE_SIZE, generator=generator),
        }
        for _ in range(TRAIN_BATCH_SIZE)
    ]
    return {"plain": plain, "sliding": sliding, "train": train}


# ---------------------------------------------------------------------------- running a model
def configure_process(threads):
    """Settings shared by both processes: CPU threads, fp32 products everywhere (no TF32), and
    no deprecation notices of the libraries (TorchScript, timm's import paths), which are not
    about the comparison."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False


@contextlib.contextmanager
def captured_outputs(module):
    """Collect the outputs of every call of ``module`` (the head's logits)."""
    outputs = []
    handle = module.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().cpu()))
    try:
        yield outputs
    finally:
        handle.remove()


def parameter_counts(model):
    params = list(model.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def run_inference(model, head, batch):
    """(head logits of all calls, concatenated; scores of the first image)."""
    with torch.no_grad(), captured_outputs(head) as logits:
        results = model(batch)
    return torch.cat(logits), results[0]["sem_seg"].cpu()


def run_training_step(model, batch):
    """The training loss (sum of the loss dict), and the gradients (zeros where none arrived)
    and values of the trainable parameters."""
    model.zero_grad(set_to_none=True)
    losses = model(batch)
    loss = sum(losses.values())
    loss.backward()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    gradients = {
        name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu().clone()
        for name, p in trainable
    }
    values = {name: p.detach().cpu().clone() for name, p in trainable}
    return loss.item(), gradients, values


# Progress steps of run_phases: two builds, the plain images, the training step, the sliding one.
PHASE_STEPS = 2 + len(PLAIN_IMAGE_SIZES) + 2


def run_phases(build, inputs, progress, before_phase=lambda model: None):
    """Run every phase on models made by ``build(sliding_window)``: plain inference and the
    training step on the paper configuration, sliding windows on the evaluation one."""
    outputs = {}
    progress.set_postfix_str("building the model")
    model = build(False)
    outputs["parameters"] = parameter_counts(model)
    progress.update()
    model.eval()
    for index, batch in enumerate(inputs["plain"]):
        progress.set_postfix_str(f"plain inference {index + 1}")
        before_phase(model)
        outputs[f"plain_{index}"] = run_inference(model, model.sem_seg_head, batch)
        progress.update()
    progress.set_postfix_str("training step")
    model.train()
    before_phase(model)
    outputs["loss"], outputs["gradients"], outputs["trainable_values"] = run_training_step(
        model, inputs["train"]
    )
    progress.update()
    del model
    gc.collect()  # the published model's forward hooks make it a reference cycle
    progress.set_postfix_str("building the sliding-window model")
    model = build(True).eval()
    progress.update()
    progress.set_postfix_str("sliding-window inference")
    before_phase(model)
    outputs["sliding"] = run_inference(model, model.sem_seg_head, inputs["sliding"])
    progress.update()
    progress.set_postfix_str("done")
    return outputs


# ---------------------------------------------------------------------------- published side
def _run_on_cpu_without_cuda_calls():
    """The published code moves text tokens with ``.cuda()`` and picks CLIP's device with
    ``torch.cuda.is_available()``; on the CPU these become no-ops (patched in this process
    only)."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.cuda.is_available = lambda: False


def _import_published(checkout):
    sys.path.insert(0, str(checkout))
    try:
        with warnings.catch_warnings():  # deprecation notices of timm/open_clip imports
            warnings.simplefilter("ignore")
            import gs_net
            from gs_net.third_party import clip
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"the published code ({checkout}/gs_net) imports {error.name!r}, which is not "
            f"installed: pip install it (see {checkout}/requirements.txt).",
            name=error.name,
        ) from None
    return gs_net, clip


def _published_cfg(checkout, gs_net, device, sliding_window):
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    gs_net.add_cat_seg_config(cfg)
    cfg.merge_from_file(str(checkout / PUBLISHED_CONFIG))
    cfg.merge_from_list([
        "MODEL.DEVICE", device,
        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", str(PUBLISHED_IGNORE_VALUE),
        "MODEL.SEM_SEG_HEAD.TRAIN_CLASS_JSON", str(checkout / PUBLISHED_TRAIN_CLASS_JSON),
        "MODEL.SEM_SEG_HEAD.TEST_CLASS_JSON", str(checkout / PUBLISHED_TEST_CLASS_JSON),
    ])  # fmt: skip
    if sliding_window:
        cfg.merge_from_list(list(SLIDING_WINDOW_OVERRIDES))
    return cfg


def _expected_published_clip(file_state):
    """The file's CLIP tensors under the published model's names (split q/k/v)."""
    expected = {}
    for key, value in file_state.items():
        if key in ("input_resolution", "context_length", "vocab_size"):
            continue
        if key.endswith("in_proj_weight"):
            for name, part in zip("qkv", value.chunk(3)):
                expected[key.replace("in_proj_weight", f"{name}_proj_weight")] = part
        else:
            expected[key] = value
    return expected


def _submodule_state(state, prefix):
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def _check_loaded(module_state, expected, what):
    """The published loaders use strict=False (a missing key keeps its random init): make
    sure every tensor came from the file, exactly or rounded through fp16."""
    if set(module_state) != set(expected):
        raise RuntimeError(f"{what}: the published model's keys differ from the file's")
    stale = [
        key
        for key, value in module_state.items()
        if not (
            torch.equal(value.cpu(), expected[key])
            or torch.equal(value.cpu(), expected[key].half().float())
        )
    ]
    if stale:
        raise RuntimeError(
            f"{what}: {len(stale)} tensors were not loaded from the file: {stale[:5]}"
        )


def _reset_published_text_cache(model):
    """The published predictor caches the tokens of the first vocabulary it sees and, at
    inference, the text embeddings, across a change of vocabulary or mode; a fresh model
    starts without them."""
    model.sem_seg_head.predictor.tokens = None
    model.sem_seg_head.predictor.cache = None


def run_published(checkout, workdir, inputs, *, seed, device, threads):
    """In its own process: build the published model on the random weights, save it as
    ``workdir/published_gsnet.pth`` (published layout) and run every phase. Returns the paths
    of the checkpoint and of the saved outputs. Runs under
    glibc's default allocator: under the tools' policy (gsnet.allocator), which keeps freed
    memory, the published training step and sliding-window inference took 20 GB together."""
    configure_process(threads)
    if device == "cpu":
        _run_on_cpu_without_cuda_calls()
    gs_net, clip = _import_published(checkout)
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    clip_state = openai_clip_state_dict(random_generator(seed, CLIP_STREAM))
    clip_file = workdir / "random_openai_clip_vit_b16.pt"
    write_torchscript_state(clip_state, clip_file)
    # The published loader downloads OpenAI's file by URL and checks its SHA-256; it gets the
    # random file instead, and the rest of clip.load (build_model, fp16 rounding) runs as is.
    clip._download = lambda url, *args, **kwargs: str(clip_file)
    dino_state = dino_state_dict(random_generator(seed, DINO_STREAM))
    dino_file = workdir / "random_dino_vitb8.pth"
    torch.save(dino_state, dino_file)
    os.environ["RSIB_CKPT"] = str(dino_file)  # the published code's only way to name it
    checkpoint = workdir / "published_gsnet.pth"
    saved = {}

    def build(sliding_window):
        cfg = _published_cfg(checkout, gs_net, device, sliding_window)
        with contextlib.redirect_stdout(io.StringIO()):  # the published loaders print
            model = build_model(cfg)
        if sliding_window:
            DetectionCheckpointer(model).load(str(checkpoint))
            return model
        generator = random_generator(seed, HEAD_STREAM)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if not name.startswith((PUBLISHED_CLIP_PREFIX, PUBLISHED_DINO_PREFIX)):
                    param.copy_(random_tensor(name, param.shape, generator))
        state = model.state_dict()
        clip_expected = _expected_published_clip(clip_state)
        _check_loaded(_submodule_state(state, PUBLISHED_CLIP_PREFIX), clip_expected, "CLIP")
        _check_loaded(_submodule_state(state, PUBLISHED_DINO_PREFIX), dino_state, "specialist")
        saved["keys"] = len(state)
        torch.save({"model": {k: v.cpu() for k, v in state.items()}}, checkpoint)
        return model

    with tqdm(total=PHASE_STEPS, desc="published code", unit="step") as progress:
        outputs = run_phases(build, inputs, progress, before_phase=_reset_published_text_cache)
    outputs["checkpoint_keys"] = saved["keys"]
    path = workdir / "published_outputs.pt"
    torch.save(outputs, path)
    return {"outputs": str(path), "checkpoint": str(checkpoint)}


# ---------------------------------------------------------------------------- this project
def run_project(checkpoint, inputs, *, device):
    """Build this project's paper model, load the published-layout checkpoint with
    GSNetCheckpointer and run every phase."""
    from detectron2.modeling import build_model

    from gsnet import GSNetCheckpointer
    from gsnet.allocator import keep_freed_memory
    from gsnet.config import load_config

    keep_freed_memory()

    def build(sliding_window):
        opts = SLIDING_WINDOW_OVERRIDES if sliding_window else ()
        cfg = load_config(str(PROJECT_CONFIG), opts, device=device)
        model = build_model(cfg)
        GSNetCheckpointer(model).load(str(checkpoint))
        return model

    with tqdm(total=PHASE_STEPS, desc="this project", unit="step") as progress:
        return run_phases(build, inputs, progress)


# ---------------------------------------------------------------------------- comparing
def max_abs_difference(a, b):
    if a.shape != b.shape:
        return math.inf
    return (a.double() - b.double()).abs().max().item()


def relative_difference(a, b):
    """|a - b| / |b| (0 when both are 0)."""
    if a == b:
        return 0.0
    return abs(a - b) / abs(b) if b else math.inf


def fingerprint(tensor):
    """Shape and content hash: parameters are matched by value (the project's model holds the
    published tensors after loading), so that no published key name is needed here."""
    data = tensor.detach().cpu().contiguous()
    digest = hashlib.sha1(data.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    return tuple(data.shape), digest


def match_parameters(published_values, project_values):
    """Pair published and project parameters holding identical tensors.

    Args:
        published_values, project_values: {name: tensor} of the trainable parameters.
    Returns:
        (list of (published name, project name), published names unmatched, project names
        unmatched).
    """
    by_value = {}
    for name, value in published_values.items():
        by_value.setdefault(fingerprint(value), []).append(name)
    pairs, unmatched_project = [], []
    for name, value in project_values.items():
        candidates = by_value.get(fingerprint(value))
        if candidates:
            pairs.append((candidates.pop(0), name))
        else:
            unmatched_project.append(name)
    unmatched_published = sorted(n for names in by_value.values() for n in names)
    return pairs, unmatched_published, unmatched_project


def gradient_differences(published, project, pairs):
    """Worst relative differences of the gradients over the pairs of tensors.

    Args:
        published, project: {name: gradient}.
        pairs: (published name, project name) of the same parameter.
    Returns:
        {"norms": ..., "tensors": ...}, each {"worst": value, "tensor": project name}: the
        difference of the gradient norms and the norm of the gradients' difference, both over
        the published gradient's norm (or GRADIENT_NOISE_FLOOR of the largest norm).
    """
    norms = {a: published[a].double().norm().item() for a, _ in pairs}
    floor = GRADIENT_NOISE_FLOOR * max(norms.values(), default=0.0)
    worst = {"norms": {"worst": 0.0, "tensor": None}, "tensors": {"worst": 0.0, "tensor": None}}
    for published_name, project_name in pairs:
        reference = published[published_name].double()
        gradient = project[project_name].double()
        scale = max(norms[published_name], floor)
        differences = {
            "norms": abs(gradient.norm().item() - norms[published_name]),
            "tensors": (gradient - reference).norm().item(),
        }
        for kind, difference in differences.items():
            relative = difference / scale if scale else (0.0 if difference == 0 else math.inf)
            if relative >= worst[kind]["worst"]:
                worst[kind] = {"worst": relative, "tensor": project_name}
    return worst


def check(name, difference, tolerance, *, relative=False):
    return {
        "check": name,
        "difference": difference,
        "relative": relative,
        "tolerance": tolerance,
        "ok": difference <= tolerance,
    }


def compare(published, project, gradients, unmatched):
    """The rows of the report; ``gradients`` is gradient_differences' result, ``unmatched``
    the trainable tensors without a counterpart."""
    inferences = [
        (f"plain_{index}", f"plain inference, {h} x {w} image", f"scores at {h} x {w}")
        for index, (h, w) in enumerate(PLAIN_IMAGE_SIZES)
    ]
    inferences.append((
        "sliding",
        "sliding-window inference, {} x {} image".format(*SLIDING_IMAGE_SIZE),
        "scores at {} x {}".format(*SLIDING_OUTPUT_SIZE),
    ))  # fmt: skip
    rows = []
    for key, image, scores in inferences:
        (logits_a, scores_a), (logits_b, scores_b) = published[key], project[key]
        shape = " x ".join(map(str, logits_a.shape))
        difference = max_abs_difference(logits_a, logits_b)
        rows.append(check(f"{image}: head logits ({shape})", difference, LOGIT_TOLERANCE))
        difference = max_abs_difference(scores_a, scores_b)
        rows.append(check(f"{image}: {scores}", difference, SCORE_TOLERANCE))
    difference = relative_difference(project["loss"], published["loss"])
    name = f"training loss, batch of {TRAIN_BATCH_SIZE}"
    rows.append(check(name, difference, LOSS_TOLERANCE, relative=True))
    worst = math.inf if unmatched else gradients["norms"]["worst"]
    name = f"gradients of the {len(published['gradients'])} trainable tensors: norms (worst)"
    rows.append(check(name, worst, GRADIENT_TOLERANCE, relative=True))
    for kind in ("total", "trainable"):
        difference = abs(published["parameters"][kind] - project["parameters"][kind])
        rows.append(check(f"parameter count, {kind}", float(difference), 0.0))
    return rows


def format_number(value):
    return "0" if value == 0 else f"{value:.1e}"


def format_table(rows):
    lines = [
        "| check | max. abs. difference (or relative) | tolerance | ok |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        difference = format_number(row["difference"])
        if row["relative"]:
            difference = f"relative {difference}"
        ok = "yes" if row["ok"] else "**NO**"
        lines.append(
            f"| {row['check']} | {difference} | {format_number(row['tolerance'])} | {ok} |"
        )
    return "\n".join(lines)


def format_summary(report):
    published, project = report["parameters"]["published"], report["parameters"]["project"]
    lines = [
        f"Parameters: published {published['total']:,} in total, {published['trainable']:,} "
        f"trainable; this project {project['total']:,}, {project['trainable']:,}.",
        f"Training loss: published {report['loss']['published']:.8f}, this project "
        f"{report['loss']['project']:.8f}.",
        f"The published-layout checkpoint ({report['checkpoint_keys']} tensors) loaded with "
        f"GSNetCheckpointer; {report['matched_trainable_tensors']} trainable tensors matched.",
        "Gradients, worst relative difference of the norms: {norms[worst]:.1e} ({norms[tensor]}); "
        "of the tensors (||dg|| / ||g||): {tensors[worst]:.1e} ({tensors[tensor]}).".format(
            **report["gradients"]
        ),
    ]
    if report["unmatched"]:
        lines.append(f"Unmatched trainable tensors: {report['unmatched'][:10]}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- driver
def check_checkout(path):
    """Raise ConfigError unless ``path`` is a checkout of the published code."""
    from gsnet.errors import ConfigError

    path = Path(path).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"--published {path}: no such folder. Give a checkout of github.com/yecy749/GSNet."
        )
    missing = [name for name in PUBLISHED_FILES if not (path / name).is_file()]
    if missing:
        raise ConfigError(
            f"--published {path} is not a checkout of the published GSNet code: "
            f"{', '.join(missing)} missing."
        )
    return path.resolve()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--published", required=True, help="checkout of github.com/yecy749/GSNet")
    parser.add_argument("--output", help="also write the report here (JSON)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    from gsnet.errors import add_debug_flag, check_minimum

    args = add_debug_flag(parser).parse_args(argv)
    check_minimum(parser, args, 1, "threads")
    if args.output and not Path(args.output).resolve().parent.is_dir():
        parser.error(f"--output {args.output}: its folder does not exist.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible.")
    return args


def main(argv=None):
    from gsnet.errors import reporting_user_errors

    args = parse_args(argv)
    with reporting_user_errors(TOOL, debug=args.debug):
        return compare_with(check_checkout(args.published), args)


def compare_with(checkout, args):
    """Run both models on the same weights and inputs; print and return the exit status."""
    from gsnet.errors import ConfigError, GSNetUserError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    configure_process(args.threads)
    start = time.perf_counter()
    inputs = make_inputs(args.seed)
    with tempfile.TemporaryDirectory(prefix="gsnet-compare-") as workdir:
        workdir = Path(workdir)
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            try:
                result = pool.submit(
                    run_published, checkout, workdir, inputs,
                    seed=args.seed, device=args.device, threads=args.threads,
                ).result()  # fmt: skip
            except ModuleNotFoundError as error:  # a package the published code imports
                raise ConfigError(str(error)) from None
        published = torch.load(result["outputs"], map_location="cpu", weights_only=True)
        try:
            project = run_project(result["checkpoint"], inputs, device=args.device)
        except GSNetUserError as error:
            # e.g. the checkpoint does not fit the model: the released file would not load.
            print(f"{TOOL}: check failed: {error}", file=sys.stderr)
            return CHECK_FAILED_STATUS
        checkpoint_keys = published["checkpoint_keys"]
    pairs, unmatched_published, unmatched_project = match_parameters(
        published.pop("trainable_values"), project.pop("trainable_values")
    )
    unmatched = unmatched_published + unmatched_project
    gradients = gradient_differences(published["gradients"], project["gradients"], pairs)
    rows = compare(published, project, gradients, unmatched)
    report = {
        "checks": rows,
        "ok": all(row["ok"] for row in rows),
        "parameters": {"published": published["parameters"], "project": project["parameters"]},
        "loss": {"published": published["loss"], "project": project["loss"]},
        "checkpoint_keys": checkpoint_keys,
        "matched_trainable_tensors": len(pairs),
        "gradients": gradients,
        "unmatched": unmatched,
        "seed": args.seed,
        "device": args.device,
        "threads": args.threads,
        "published": str(checkout),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "runtime_s": round(time.perf_counter() - start, 1),
    }
    print(format_table(rows))
    print()
    print(format_summary(report))
    print(f"({report['runtime_s']:.0f} s)")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else CHECK_FAILED_STATUS


if __name__ == "__main__":
    sys.exit(main())
