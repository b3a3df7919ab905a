"""Weight files: the released-checkpoint rename table, GSNet's checkpointer and the loaders of
the pretrained encoders (CLIP and the remote-sensing specialist) used when training starts.

The released GSNet checkpoint (a Detectron2 checkpoint whose "model" entry is the published
module tree's state dict) loads unchanged through every loader: ``GSNet`` renames the keys of a
published-layout state dict in a load-state-dict pre-hook (:func:`rename_released_keys_hook`), so
``model.load_state_dict``, Detectron2's ``DetectionCheckpointer`` and ``DefaultPredictor`` and
``GSNetCheckpointer`` all read it; ``RELEASED_KEY_RENAMES`` (also used by
``tools/convert_checkpoint.py``) is the one place that knows the published key names.

Weight files are read with ``torch.load(weights_only=True)``. Checkpoints of this lineage hold
NumPy scalars and arrays and DINO's ``argparse.Namespace`` next to the tensors: these types
(``SAFE_PICKLE_GLOBALS``, which build plain data and run no code) are added to torch's allow-list
when this module is imported, so Detectron2's own loaders read such files too. A file that needs
anything else is refused with a message naming the type; reading it anyway is an explicit opt-in
(``MODEL.ALLOW_UNSAFE_UNPICKLING``, which runs whatever code the file holds).

Checkpoints are written crash-safely: a run killed at any moment (even while writing) leaves
``last_checkpoint`` naming a complete file (see :func:`write_file_atomically`).
"""

import argparse
import errno
import glob
import logging
import os
import re
import secrets

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from .errors import CheckpointWriteError, ConfigError, InputFileError, MissingFileError

__all__ = [
    "RELEASED_KEY_RENAMES",
    "SAFE_PICKLE_GLOBALS",
    "GSNetCheckpointer",
    "UnsafeCheckpointError",
    "convert_released_state_dict",
    "is_released_layout",
    "load_clip_weights",
    "load_pretrained_encoders",
    "load_specialist_weights",
    "load_weight_file",
    "rename_released_keys_hook",
    "pretrained_weight_sources",
    "write_file_atomically",
]

logger = logging.getLogger(__name__)

_HEAD = r"^sem_seg_head\.predictor\.transformer\."
# Published key prefix (regular expression) -> this project's key prefix. First match wins.
RELEASED_KEY_RENAMES = [
    (r"^sem_seg_head\.predictor\.clip_model\.", "generalist.clip."),
    (r"^upsample1\.", "generalist.guidance_upsample.0."),
    (r"^upsample2\.", "generalist.guidance_upsample.1."),
    (r"^dino_model\.", "specialist.vit."),
    (r"^dino_down_sample\.", "specialist.dense_projection."),
    (r"^dino_decod_proj1\.", "specialist.guidance_projection.0."),
    (r"^dino_decod_proj2\.", "specialist.guidance_projection.1."),
    (_HEAD + r"conv1\.", "sem_seg_head.fusion.cost_embed."),
    (_HEAD + r"conv2\.", "sem_seg_head.fusion.specialist_embed."),
    (_HEAD + r"fusion_corr\.", "sem_seg_head.fusion.fuse."),
    (_HEAD + r"fusion_feats\.", "sem_seg_head.fusion.feature_fuse."),
    (_HEAD + r"simple_concatenation_corr_embed\.", "sem_seg_head.fusion.concat_embed."),
    (_HEAD + r"guidance_projection\.", "sem_seg_head.appearance_guidance."),
    (_HEAD + r"text_guidance_projection\.", "sem_seg_head.text_guidance."),
    (_HEAD + r"layers\.(\d+)\.swin_block\.", r"sem_seg_head.layers.\1.spatial."),
    (
        _HEAD + r"layers\.(\d+)\.attention\.attention\.",
        r"sem_seg_head.layers.\1.classes.attention.",
    ),
    (_HEAD + r"layers\.(\d+)\.attention\.MLP\.", r"sem_seg_head.layers.\1.classes.mlp."),
    (_HEAD + r"layers\.(\d+)\.attention\.", r"sem_seg_head.layers.\1.classes."),
    (_HEAD + r"CLIP_decoder_guidance_projection\.", "sem_seg_head.decoder.generalist_guidance."),
    (_HEAD + r"DINO_decoder_guidance_projection\.", "sem_seg_head.decoder.specialist_guidance."),
    (_HEAD + r"Fusiondecoder1\.conv\.double_conv\.", "sem_seg_head.decoder.up_blocks.0.conv."),
    (_HEAD + r"Fusiondecoder2\.conv\.double_conv\.", "sem_seg_head.decoder.up_blocks.1.conv."),
    (_HEAD + r"Fusiondecoder1\.", "sem_seg_head.decoder.up_blocks.0."),
    (_HEAD + r"Fusiondecoder2\.", "sem_seg_head.decoder.up_blocks.1."),
    (_HEAD + r"head\.", "sem_seg_head.decoder.head."),
]
# Published entries that are constants of the geometry, rebuilt by the model: not loaded.
RELEASED_DERIVED_KEYS = re.compile(r"\.attn_mask$")
_RELEASED_MARKERS = ("sem_seg_head.predictor.", "dino_model.")
# The value of CLIP_WEIGHTS / DINO_WEIGHTS that asks for random initialisation (toy runs).
RANDOM_WEIGHTS = "random"
# Suffix of the temporary files that checkpoints are written to before being renamed.
PARTIAL_SUFFIX = ".partial"

# Plain-data types that checkpoints of this lineage pickle next to their tensors: NumPy scalars,
# arrays and dtypes (iteration counters, metrics) and argparse.Namespace (DINO's "args" entry).
# Each only builds data; none runs code. NumPy 1.x pickles name numpy.core, NumPy 2 numpy._core.
_NUMPY_DTYPE_CLASSES = [
    type(np.dtype(name))
    for name in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
    + ("float16", "float32", "float64", "complex64", "complex128")
]
SAFE_PICKLE_GLOBALS = [
    np._core.multiarray.scalar,
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    np._core.multiarray._reconstruct,
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    np.ndarray,
    np.dtype,
    *_NUMPY_DTYPE_CLASSES,
    argparse.Namespace,
]
torch.serialization.add_safe_globals(SAFE_PICKLE_GLOBALS)
# The config key that opts in to unrestricted unpickling (named in error messages).
UNSAFE_UNPICKLING_KEY = "MODEL.ALLOW_UNSAFE_UNPICKLING"


class UnsafeCheckpointError(InputFileError):
    """A weight file holds Python objects beyond ``SAFE_PICKLE_GLOBALS``."""


def load_weight_file(path, *, what, allow_unsafe_unpickling=False):
    """Read a PyTorch file onto the CPU with ``weights_only=True`` (tensors, plain containers and
    ``SAFE_PICKLE_GLOBALS``).

    Args:
        path: the file (a path or a file object).
        what: how messages name the file ("CLIP weight file (MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS)").
        allow_unsafe_unpickling: read a file that holds other objects with unrestricted
            unpickling, which runs any code the file carries: only for files one trusts.
    Raises:
        MissingFileError: no such file (a FileNotFoundError).
        UnsafeCheckpointError: the file holds objects beyond the allow-list (the message names
            them and the opt-in), and ``allow_unsafe_unpickling`` is False.
        InputFileError: the file is truncated, corrupt or not a PyTorch file.
    """
    if isinstance(path, (str, os.PathLike)) and not os.path.isfile(path):
        raise MissingFileError(f"{what} not found: {path}. Check the path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if not (allow_unsafe_unpickling and _refused_type(error)):
            raise _load_error(path, what, error) from error
    logger.warning(
        "Reading %s %s with unrestricted unpickling (%s).", what, path, UNSAFE_UNPICKLING_KEY
    )
    try:
        if hasattr(path, "seek"):
            path.seek(0)
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise _load_error(path, what, error) from error


# How torch.load(weights_only=True) names an object it refuses (other failures: a corrupt file).
_REFUSED_TYPE = re.compile(r"GLOBAL ([\w.]+) was not an allowed global|got <class '([\w.]+)'>")


def _refused_type(error):
    """The type that torch's safe loading refused, or None when it failed otherwise."""
    match = _REFUSED_TYPE.search(str(error))
    return next(filter(None, match.groups())) if match else None


def _load_error(path, what, error):
    found = _refused_type(error)
    if found:
        return UnsafeCheckpointError(
            f"{what} {path} holds {found}, which is not on GSNet's allow-list of safe types "
            f"(tensors, NumPy scalars and arrays, argparse.Namespace). Only if you trust the "
            f"file, set {UNSAFE_UNPICKLING_KEY} True (unrestricted unpickling runs any code "
            "it carries), or re-save its tensors alone."
        )
    return InputFileError(
        f"{what} {path} is not a readable PyTorch file ({_describe_load_error(error)}): it is "
        "truncated or corrupt (copy or download it again), or not a weight file."
    )


def write_file_atomically(path, write):
    """Write a file so that ``path`` holds either its old content or the complete new one.

    The content goes to a temporary file in the same folder, which is flushed, fsync'ed and
    renamed over ``path`` (``os.replace``, atomic on POSIX); the folder is then fsync'ed so that
    the rename survives a power loss. On any error the temporary file is removed.

    Args:
        path (str): the file to write.
        write (callable): ``write(f)`` writes the content to the binary file object ``f``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(
        folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
    )
    # os.open rather than tempfile.mkstemp: the file gets the umask's permissions, not 0600.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    try:
        folder_descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_descriptor)
        finally:
            os.close(folder_descriptor)
    except OSError:  # some file systems cannot fsync a folder; the rename is done regardless
        pass


def is_released_layout(state_dict) -> bool:
    """Whether a state dict uses the published module tree's key names."""
    return any(key.startswith(_RELEASED_MARKERS) for key in state_dict)


def rename_released_keys_hook(module, state_dict, prefix, *args):
    """A load-state-dict pre-hook for the module that owns the released checkpoint's keys: when
    the entries under ``prefix`` use the published layout, rename them in place with
    ``convert_released_state_dict`` (so every loader reads a released file)."""
    own = {key[len(prefix) :]: key for key in state_dict if key.startswith(prefix)}
    if not is_released_layout(own):
        return
    logger.info("Converting a state dict in the published GSNet layout.")
    converted = convert_released_state_dict({name: state_dict[key] for name, key in own.items()})
    for key in own.values():
        del state_dict[key]
    state_dict.update({prefix + name: value for name, value in converted.items()})


def convert_released_state_dict(state_dict):
    """Rename a published-layout state dict to this project's layout.

    Raises ValueError listing every key that the rename table does not cover.
    """
    converted, unknown = {}, []
    for key, value in state_dict.items():
        if RELEASED_DERIVED_KEYS.search(key):
            continue
        for pattern, replacement in RELEASED_KEY_RENAMES:
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                converted[new_key] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise InputFileError(
            f"{len(unknown)} keys of the published checkpoint have no rename rule "
            f"(e.g. {unknown[:5]}): is this a GSNet checkpoint?"
        )
    return converted


def _describe_load_error(error):
    """One line on why ``torch.load`` failed (its weights_only refusal is a page of text)."""
    text = str(error)
    if "Weights only load failed" in text:
        match = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        return f"torch.load(weights_only=True) refused it ({match.group(1) if match else text})"
    return f"{type(error).__name__}: {text.splitlines()[0].rstrip('.') if text else ''}"


class GSNetCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer that also reads released (published-layout) GSNet files, refuses
    checkpoints that do not fit the model (listing missing and unexpected keys), names a missing
    or unreadable file, and writes checkpoints crash-safely: ``<name>.pth`` and then
    ``last_checkpoint`` are each replaced atomically, so ``last_checkpoint`` always names a
    complete file, and a failed write (e.g. a full disk) leaves the earlier checkpoints as
    they were.

    Files are read with ``load_weight_file``: objects beyond ``SAFE_PICKLE_GLOBALS`` are refused
    unless the checkpointer was made with ``allow_unsafe_unpickling=True``.
    """

    def __init__(self, model, save_dir="", *, allow_unsafe_unpickling=False, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.allow_unsafe_unpickling = allow_unsafe_unpickling

    def save(self, name, **kwargs):
        """Write ``<save_dir>/<name>.pth`` (model, checkpointables, ``kwargs``) atomically, then
        point ``last_checkpoint`` at it.

        Raises:
            CheckpointWriteError: the file could not be written; nothing was changed.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, checkpointable in self.checkpointables.items():
            data[key] = checkpointable.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        self._write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        """Point ``<save_dir>/last_checkpoint`` at a checkpoint file, atomically."""
        last_checkpoint = os.path.join(self.save_dir, "last_checkpoint")
        self._write(last_checkpoint, lambda f: f.write(last_filename_basename.encode()))

    def _write(self, path, write):
        try:
            write_file_atomically(path, write)
        except OSError as error:
            previous = self.get_checkpoint_file() if self.has_checkpoint() else None
            kept = (
                f"the previous checkpoint {previous} and last_checkpoint are unchanged"
                if previous
                else "no earlier checkpoint exists"
            )
            if error.errno == errno.ENOSPC:
                raise CheckpointWriteError(
                    f"Disk full: could not write {path} ({error.strerror}). The partial file was "
                    f"removed; {kept}. Free space in {self.save_dir} (or use another OUTPUT_DIR) "
                    "and rerun the same command with --resume."
                ) from error
            raise CheckpointWriteError(
                f"Could not write {path}: {error.strerror or error}. The partial file was "
                f"removed; {kept}. Make {self.save_dir} writable and rerun the same command "
                "with --resume."
            ) from error

    def remove_partial_files(self):
        """Delete the temporary files of checkpoint writes that a killed run left behind."""
        if not self.save_dir or not self.save_to_disk:
            return
        for path in glob.glob(os.path.join(glob.escape(self.save_dir), f".*{PARTIAL_SUFFIX}")):
            self.logger.info("Removing %s, left by an interrupted checkpoint write.", path)
            os.remove(path)

    def resume_or_load(self, path, *, resume=True):
        """Detectron2's resume_or_load, with a clear error when ``last_checkpoint`` or ``path``
        (MODEL.WEIGHTS) names a file that does not exist."""
        if resume and self.has_checkpoint():
            last = self.get_checkpoint_file()
            if not os.path.isfile(last):
                raise InputFileError(
                    f"{os.path.join(self.save_dir, 'last_checkpoint')} names {last}, which does "
                    "not exist. Write the name of an existing checkpoint of "
                    f"{self.save_dir} (e.g. model_0004999.pth) into last_checkpoint, or delete "
                    "last_checkpoint to start afresh."
                )
        elif path and "://" not in path and not os.path.isfile(path):
            raise InputFileError(
                f"Weights file not found: {path} (MODEL.WEIGHTS). Give the path of a GSNet "
                "checkpoint (.pth); the released model or a model_*.pth of a training run."
            )
        return super().resume_or_load(path, resume=resume)

    def load(self, path, *args, **kwargs):
        """Detectron2's load; the file being read is kept for error messages."""
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = None

    def _torch_load(self, f):
        try:
            checkpoint = load_weight_file(
                f, what="Checkpoint", allow_unsafe_unpickling=self.allow_unsafe_unpickling
            )
        except UnsafeCheckpointError:
            raise
        except InputFileError as error:
            cause = error.__cause__
            raise InputFileError(
                f"Cannot read checkpoint {f}: {_describe_load_error(cause)}. The file is "
                "truncated or corrupt (e.g. an interrupted copy or download) or not a PyTorch "
                "checkpoint: copy it again, or resume from an earlier checkpoint."
            ) from cause
        if not isinstance(checkpoint, dict):
            raise InputFileError(
                f"Checkpoint {f} holds a {type(checkpoint).__name__}, not a checkpoint dict "
                "(a state dict, or a dict with a 'model' entry)."
            )
        return checkpoint

    def _load_model(self, checkpoint):
        state_dict = checkpoint["model"]
        if is_released_layout(state_dict):
            logger.info("Converting a checkpoint in the published GSNet layout.")
            checkpoint["model"] = state_dict = convert_released_state_dict(state_dict)
        mismatch = describe_key_mismatch(self.model.state_dict(), state_dict)
        if mismatch:
            raise InputFileError(
                f"Checkpoint {self._loading} does not fit this model (another architecture or "
                f"config?).\n{mismatch}\n"
                "Check that the config (e.g. MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED, NUM_LAYERS, "
                "USE_CLIP_CORR/USE_DINO_CORR, decoder guidance dims) matches the checkpoint."
            )
        return super()._load_model(checkpoint)


# Parameters that the published CLIP loader rounded through fp16 (OpenAI's convert_weights).
_FP16_ROUNDED = re.compile(
    r"(conv1\.weight|c_fc\.(weight|bias)|c_proj\.(weight|bias)|out_proj\.(weight|bias)"
    r"|_proj_weight|in_proj_bias|^text_projection|^visual\.proj)$"
)


def _names_a_file(source: str) -> bool:
    """Whether a CLIP_WEIGHTS value is meant as a file (a path or a weight-file suffix) rather
    than an open_clip pretrained tag."""
    return os.sep in source or source.endswith((".pt", ".pth", ".bin", ".safetensors"))


def clip_state_dict_from_source(
    source: str, open_clip_name: str | None, *, allow_unsafe_unpickling=False
):
    """CLIP weights (OpenAI/open_clip key layout, packed attention) from a file or a tag."""
    if os.path.isfile(source):
        try:
            return torch.jit.load(source, map_location="cpu").state_dict()
        except RuntimeError:
            state = load_weight_file(
                source,
                what="CLIP weight file (MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS)",
                allow_unsafe_unpickling=allow_unsafe_unpickling,
            )
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            if not isinstance(state, dict):
                raise InputFileError(f"CLIP weight file {source} holds no state dict") from None
            return {k.removeprefix("module."): v for k, v in state.items()}
    if _names_a_file(source):
        raise InputFileError(
            f"CLIP weight file not found: {source} (MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS). Give an "
            "existing file, an open_clip pretrained tag such as 'openai', or 'random'."
        )
    import open_clip

    try:
        model = open_clip.create_model(open_clip_name, pretrained=source)
    except Exception as error:
        raise ConfigError(
            f"Could not get CLIP weights {open_clip_name!r} / {source!r} through open_clip "
            f"({error}). Without internet, download OpenAI's ViT-B-16.pt elsewhere and set "
            "MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS to its path."
        ) from error
    return model.state_dict()


def load_clip_weights(generalist, source: str, *, allow_unsafe_unpickling=False):
    """Load CLIP weights into ``generalist.clip``: packed in-projections are split into q/k/v,
    and the parameters OpenAI's loader keeps in fp16 are rounded through fp16 (exact for
    OpenAI's own fp16 file; fp32 weights from elsewhere then match the published model)."""
    state = clip_state_dict_from_source(
        source, generalist.open_clip_name, allow_unsafe_unpickling=allow_unsafe_unpickling
    )
    converted = {}
    for key, value in state.items():
        if key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
            continue
        if key.endswith("attn.in_proj_weight"):
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                converted[key.replace("in_proj_weight", f"{name}_proj_weight")] = part
        else:
            converted[key] = value
    converted = {
        k: v.half().float() if _FP16_ROUNDED.search(k) else v.float() for k, v in converted.items()
    }
    _load_strict(generalist.clip, converted, f"CLIP weights {source!r} for {generalist.arch}")


# The value of DINO_WEIGHTS that asks for timm's pretrained weights of the architecture.
TIMM_PRETRAINED = "timm"


def _timm_pretrained_state_dict(timm_name: str):
    import timm

    try:
        return timm.create_model(timm_name, pretrained=True, num_classes=0).state_dict()
    except Exception as error:
        raise ConfigError(
            f"Could not get timm's pretrained weights of {timm_name!r} "
            f"(MODEL.SEM_SEG_HEAD.DINO_WEIGHTS 'timm'): {str(error).splitlines()[0]}. Without "
            "internet, save them elsewhere (timm.create_model(name, pretrained=True)"
            ".state_dict()) and set DINO_WEIGHTS to that file."
        ) from error


def load_specialist_weights(specialist, source: str, *, allow_unsafe_unpickling=False):
    """Load pretrained weights into ``specialist.pretrained_module`` (the timm model): a
    DINO-style checkpoint (an optional "teacher" entry, "module."/"backbone." prefixes are
    stripped, DINO's projection head is ignored), a timm state dict (optionally under "model" or
    "state_dict"), or "timm" for timm's pretrained weights. Every backbone key must be present.
    ``allow_unsafe_unpickling``: see ``load_weight_file``."""
    arch = getattr(specialist, "arch", type(specialist).__name__)
    if source == TIMM_PRETRAINED:
        state = _timm_pretrained_state_dict(specialist.timm_name)
    else:
        state = load_weight_file(
            source,
            what="Specialist (RSIB) weight file (MODEL.SEM_SEG_HEAD.DINO_WEIGHTS)",
            allow_unsafe_unpickling=allow_unsafe_unpickling,
        )
        for wrapper in ("teacher", "model", "state_dict"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
        if not isinstance(state, dict):
            raise InputFileError(
                f"Specialist weight file {source} holds a {type(state).__name__}, not a state "
                "dict (MODEL.SEM_SEG_HEAD.DINO_WEIGHTS)."
            )
        state = {k.replace("module.", "").replace("backbone.", ""): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    _load_strict(specialist.pretrained_module, state, f"Specialist weights {source} for {arch}")


def describe_key_mismatch(expected, state):
    """How a state dict departs from a model's (missing, unexpected and mismatched-shape keys,
    ten of each shown); empty when it fits exactly."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return ""
    return (
        f"  missing keys ({len(missing)}): {missing[:10]}\n"
        f"  unexpected keys ({len(unexpected)}): {unexpected[:10]}\n"
        f"  shape mismatches ({len(mismatched)}): {mismatched[:10]}"
    )


def _load_strict(module, state, what):
    mismatch = describe_key_mismatch(module.state_dict(), state)
    if mismatch:
        raise InputFileError(
            f"{what} do not fit that backbone (is the file for another architecture? check "
            f"MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED / DINO_ARCH).\n{mismatch}"
        )
    module.load_state_dict(state)
    logger.info("Loaded %s (%d tensors).", what, len(state))


def load_pretrained_encoders(
    model, *, clip_weights: str, specialist_weights: str, allow_unsafe_unpickling=False
):
    """Load the encoders' pretrained weights when training starts (no MODEL.WEIGHTS).

    Args:
        clip_weights: MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS: a file, an open_clip tag, or "random".
        specialist_weights: MODEL.SEM_SEG_HEAD.DINO_WEIGHTS: a file, "timm", "random", or empty
            for the environment variable RSIB_CKPT (the published code's way).
        allow_unsafe_unpickling: MODEL.ALLOW_UNSAFE_UNPICKLING (see ``load_weight_file``).
    """
    if clip_weights == RANDOM_WEIGHTS:
        logger.warning("CLIP_WEIGHTS is %r: CLIP starts from random weights.", RANDOM_WEIGHTS)
    else:
        load_clip_weights(
            model.generalist, clip_weights, allow_unsafe_unpickling=allow_unsafe_unpickling
        )
    if model.specialist is None:
        return
    if specialist_weights == RANDOM_WEIGHTS:
        logger.warning("DINO_WEIGHTS is %r: the specialist starts random.", RANDOM_WEIGHTS)
    else:
        path = specialist_weights or os.environ.get("RSIB_CKPT", "")
        if not path:
            raise ConfigError(
                "No specialist (RSIB) weights: set MODEL.SEM_SEG_HEAD.DINO_WEIGHTS to the DINO "
                "checkpoint (or the environment variable RSIB_CKPT), or start from a GSNet "
                "checkpoint with MODEL.WEIGHTS."
            )
        load_specialist_weights(
            model.specialist, path, allow_unsafe_unpickling=allow_unsafe_unpickling
        )


def pretrained_weight_sources(cfg) -> list[str]:
    """What ``load_pretrained_encoders`` will read for a config when training starts, in words
    (a GSNet checkpoint in MODEL.WEIGHTS replaces all of it)."""
    from .modeling.generalist import open_clip_model_name

    head = cfg.MODEL.SEM_SEG_HEAD
    sources = []
    clip = head.CLIP_WEIGHTS
    if clip != RANDOM_WEIGHTS:
        if os.path.isfile(clip) or _names_a_file(clip):
            sources.append(f"CLIP file `{clip}` (CLIP_WEIGHTS)")
        else:
            name = open_clip_model_name(head.CLIP_PRETRAINED)
            sources.append(f"open_clip `{name}` weights `{clip}`")
    if head.USE_DINO_CORR and head.DINO_WEIGHTS != RANDOM_WEIGHTS:
        if head.DINO_WEIGHTS == TIMM_PRETRAINED:
            sources.append(f"timm `{head.DINO_ARCH}` pretrained weights")
        elif head.DINO_WEIGHTS:
            sources.append(f"specialist file `{head.DINO_WEIGHTS}` (DINO_WEIGHTS)")
        else:
            sources.append("RSIB DINO checkpoint (DINO_WEIGHTS or $RSIB_CKPT)")
    return sources
