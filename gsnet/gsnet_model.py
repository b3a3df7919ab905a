"""The GSNet meta-architecture: normalise -> encoders -> head -> loss / inference.

Shapes: B images, T classes, D the joint width (512), H x W the cost-volume grid (24 x 24);
logits come out at 4H x 4W (96 x 96).
"""

import logging

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_sem_seg_head
from detectron2.structures import ImageList
from torch import nn
from torch.nn import functional as F

from .checkpoint import rename_released_keys_hook
from .data.class_names import load_class_names
from .inference import check_window_geometry, sliding_window_inference, whole_image_inference
from .modeling.generalist import GeneralistEncoder
from .modeling.specialist import SpecialistEncoder
from .modeling.text_queries import TextQueries

__all__ = ["GSNet", "set_finetuning"]

logger = logging.getLogger(__name__)

CLIP_FINETUNE_MODES = ("attention", "full", "prompt", "freezeIMG", "frozen")
SPECIALIST_FINETUNE_MODES = ("freeze", "attention", "full")
INFERENCE_PRECISIONS = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def set_finetuning(generalist, specialist, *, clip_finetune: str, specialist_finetune: str):
    """Set ``requires_grad`` of the encoders' parameters as the published code does.

    CLIP (matched on parameter names relative to the CLIP model):
      - "attention": in both towers only the attention blocks' q and v projection WEIGHTS;
      - "full": every parameter under a "transformer" (the blocks of both towers);
      - "prompt": visual prompt tokens only;
      - "freezeIMG": the text tower's q/v weights and its positional embedding;
      - anything else: frozen.
    Specialist: "attention" trains the qkv weights and the positional embedding, "full"
    everything, "freeze" nothing. GSNet's own layers in the encoders always train.
    """
    for name, param in generalist.clip.named_parameters():
        is_qv = "attn" in name and ("q_proj" in name or "v_proj" in name)
        if clip_finetune == "freezeIMG":
            trainable = not name.startswith("visual") and (is_qv or "position" in name)
        elif "transformer" not in name:
            trainable = False
        elif clip_finetune == "attention":
            trainable = is_qv
        elif clip_finetune == "full":
            trainable = True
        elif clip_finetune == "prompt":
            trainable = "prompt" in name
        else:
            trainable = False
        param.requires_grad = trainable
    if specialist is not None:
        for name, param in specialist.vit.named_parameters():
            if specialist_finetune == "attention":
                param.requires_grad = "attn.qkv.weight" in name or "pos_embed" in name
            else:
                param.requires_grad = specialist_finetune == "full"


@META_ARCH_REGISTRY.register()
class GSNet(nn.Module):
    """GSNet: a generalist (CLIP) and a specialist (remote-sensing ViT) stream, whose cost
    volumes against the text queries are fused, aggregated and decoded into per-class masks.
    """

    @configurable
    def __init__(
        self,
        *,
        generalist: GeneralistEncoder,
        specialist: SpecialistEncoder | None,
        use_generalist_image: bool,
        text_queries: TextQueries,
        sem_seg_head: nn.Module,
        train_class_names: list[str],
        test_class_names: list[str],
        pixel_mean,
        pixel_std,
        size_divisibility: int,
        ignore_value: int,
        loss_includes_ignored: bool,
        sliding_window: bool,
        sliding_window_size: int,
        sliding_window_stride: int,
        sliding_window_resolution,
        inference_precision: str = "float32",
    ):
        """
        Args:
            generalist: the CLIP encoder (its text tower is always used).
            specialist: the remote-sensing encoder, or None (single-stream ablation).
            use_generalist_image: whether CLIP's image features feed the cost volume.
            text_queries: class names -> text embeddings.
            sem_seg_head: fusion + aggregation + decoder.
            train_class_names: the training vocabulary.
            test_class_names: the default inference vocabulary (``set_test_class_names``
                changes it at run time).
            pixel_mean, pixel_std: normalisation of the image fed to both encoders (0-255 scale).
            size_divisibility: batches are padded to a multiple of this before resizing.
            ignore_value: label value left out of the one-hot training targets.
            loss_includes_ignored: keep ignored pixels (all-zero targets) in the loss mean, as
                published, or leave them out.
            sliding_window: evaluate with sliding windows (the paper's protocol).
            sliding_window_size, sliding_window_stride, sliding_window_resolution: its geometry.
            inference_precision: "float32", or autocast to "bfloat16" / "float16" at inference.
        """
        super().__init__()
        self.generalist = generalist
        self.specialist = specialist
        self.use_generalist_image = use_generalist_image
        self.text_queries = text_queries
        self.sem_seg_head = sem_seg_head
        self.train_class_names = list(train_class_names)
        self.set_test_class_names(test_class_names)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = size_divisibility
        self.ignore_value = ignore_value
        self.loss_includes_ignored = loss_includes_ignored
        self.sliding_window = sliding_window
        self.sliding_window_size = sliding_window_size
        self.sliding_window_stride = sliding_window_stride
        self.sliding_window_resolution = tuple(sliding_window_resolution)
        if inference_precision not in INFERENCE_PRECISIONS:
            raise ValueError(
                f"Unknown TEST.PRECISION {inference_precision!r}; choose one of "
                f"{sorted(INFERENCE_PRECISIONS)}."
            )
        self.inference_precision = INFERENCE_PRECISIONS[inference_precision]
        if sliding_window:
            check_window_geometry(
                self.sliding_window_resolution, sliding_window_size, sliding_window_stride
            )
        # Cached text embeddings depend on the weights: drop them whenever weights are loaded.
        self.register_load_state_dict_pre_hook(lambda *args, **kwargs: self.clear_text_cache())
        # The released checkpoint's key layout is recognised here, so every loader reads it.
        self.register_load_state_dict_pre_hook(rename_released_keys_hook)

    @classmethod
    def from_config(cls, cfg):
        head = cfg.MODEL.SEM_SEG_HEAD
        if head.CLIP_FINETUNE not in CLIP_FINETUNE_MODES:
            logger.info("CLIP_FINETUNE=%r: CLIP is frozen.", head.CLIP_FINETUNE)
        if head.DINO_FINETUNE not in SPECIALIST_FINETUNE_MODES:
            raise ValueError(
                f"Unknown MODEL.SEM_SEG_HEAD.DINO_FINETUNE {head.DINO_FINETUNE!r}; choose one "
                f"of {SPECIALIST_FINETUNE_MODES}."
            )
        if head.PROMPT_LENGTH > 0:
            raise ValueError(
                "Visual prompt tuning (MODEL.SEM_SEG_HEAD.PROMPT_LENGTH > 0) is not supported: "
                "set PROMPT_LENGTH 0 (the paper's setting)."
            )
        resolution = tuple(head.FEATURE_RESOLUTION)
        generalist = GeneralistEncoder(
            arch=head.CLIP_PRETRAINED,
            feature_resolution=resolution,
            guidance_channels=tuple(head.DECODER_CLIP_GUIDANCE_DIMS)
            if head.USE_CLIP_CORR
            else (0, 0),
        )
        specialist = None
        if head.USE_DINO_CORR:
            specialist = SpecialistEncoder(
                arch=head.DINO_ARCH,
                feature_resolution=resolution,
                out_channels=generalist.embed_dim,
                guidance_channels=tuple(head.DECODER_DINO_GUIDANCE_DIMS),
            )
        set_finetuning(
            generalist,
            specialist,
            clip_finetune=head.CLIP_FINETUNE,
            specialist_finetune=head.DINO_FINETUNE,
        )
        train_class_names = load_class_names(head.TRAIN_CLASS_JSON)
        if head.NUM_CLASSES != len(train_class_names):
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={head.NUM_CLASSES} contradicts "
                f"TRAIN_CLASS_JSON={head.TRAIN_CLASS_JSON} ({len(train_class_names)} classes): "
                "set NUM_CLASSES to the number of names in the JSON."
            )
        return {
            "generalist": generalist,
            "specialist": specialist,
            "use_generalist_image": head.USE_CLIP_CORR,
            "text_queries": TextQueries(prompt_ensemble_type=cfg.MODEL.PROMPT_ENSEMBLE_TYPE),
            "sem_seg_head": build_sem_seg_head(cfg, None),
            "train_class_names": train_class_names,
            "test_class_names": load_class_names(head.TEST_CLASS_JSON),
            "pixel_mean": cfg.MODEL.CLIP_PIXEL_MEAN,
            "pixel_std": cfg.MODEL.CLIP_PIXEL_STD,
            "size_divisibility": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
            "ignore_value": head.IGNORE_VALUE,
            "loss_includes_ignored": head.LOSS_INCLUDES_IGNORED,
            "sliding_window": cfg.TEST.SLIDING_WINDOW,
            "sliding_window_size": cfg.TEST.SLIDING_WINDOW_SIZE,
            "sliding_window_stride": cfg.TEST.SLIDING_WINDOW_STRIDE,
            "sliding_window_resolution": cfg.TEST.SLIDING_WINDOW_RESOLUTION,
            "inference_precision": cfg.TEST.PRECISION,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    # ------------------------------------------------------------------ vocabulary
    def set_test_class_names(self, class_names):
        """Set the inference vocabulary (any number of names); no rebuild needed."""
        class_names = list(class_names)
        if not class_names or not all(isinstance(n, str) and n.strip() for n in class_names):
            raise ValueError(
                f"The class list must hold at least one non-empty name, got {class_names!r}."
            )
        self.test_class_names = class_names

    def clear_text_cache(self):
        self.text_queries.clear_cache()

    def train(self, mode: bool = True):
        # Text embeddings cached at inference are stale once the text tower trains again.
        self.clear_text_cache()
        return super().train(mode)

    def text_embeddings(self, class_names):
        """(T, D) normalised text embeddings; cached per vocabulary at inference."""
        return self.text_queries(
            class_names,
            self.generalist.encode_text,
            device=self.device,
            use_cache=not self.training,
        )

    # ------------------------------------------------------------------ core
    def normalize(self, images):
        return (images - self.pixel_mean) / self.pixel_std

    def predict_logits(self, images, class_names):
        """
        Args:
            images: (B, 3, h, w) normalised images of any size (resized to each encoder's
                input size here).
            class_names: the vocabulary (T names).
        Returns:
            (B, T, 4H, 4W) logits.
        """
        text = self.text_embeddings(class_names)
        generalist = specialist = None
        if self.use_generalist_image:
            generalist = self.generalist(self._resize(images, self.generalist.input_size))
        if self.specialist is not None:
            specialist = self.specialist(self._resize(images, self.specialist.input_size))
        return self.sem_seg_head(generalist, specialist, text)

    @staticmethod
    def _resize(images, size):
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs, class_names=None):
        """
        Args:
            batched_inputs: list of dicts from a Detectron2 mapper: "image" (3, H, W) 0-255,
                optional "height"/"width" (output size) and, in training, "sem_seg" (H, W).
            class_names: the vocabulary; default: the training vocabulary in training, the test
                vocabulary at inference.
        Returns:
            training: {"loss_sem_seg": scalar}. Inference: a list of {"sem_seg": (T, height,
            width) class scores}.
        """
        if self.training:
            return self.losses(batched_inputs, class_names or self.train_class_names)
        class_names = class_names or self.test_class_names
        images = [x["image"].to(self.device, torch.float32) for x in batched_inputs]
        output_sizes = [
            (x.get("height", image.shape[-2]), x.get("width", image.shape[-1]))
            for x, image in zip(batched_inputs, images)
        ]

        def predict(batch):
            with torch.autocast(
                self.device.type,
                dtype=self.inference_precision,
                enabled=self.inference_precision != torch.float32,
            ):
                return self.predict_logits(batch, class_names).float()

        if self.sliding_window:
            scores = sliding_window_inference(
                predict,
                images,
                output_sizes,
                normalize=self.normalize,
                window=self.sliding_window_size,
                stride=self.sliding_window_stride,
                resolution=self.sliding_window_resolution,
            )
        else:
            scores = whole_image_inference(
                predict,
                images,
                output_sizes,
                normalize=self.normalize,
                size_divisibility=self.size_divisibility,
            )
        return [{"sem_seg": s} for s in scores]

    def losses(self, batched_inputs, class_names):
        """Binary cross-entropy of the logits (upsampled to the label size) against one-hot
        targets over all T classes (CAT-Seg's loss)."""
        images = [self.normalize(x["image"].to(self.device, torch.float32)) for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility).tensor
        targets = torch.stack([x["sem_seg"].to(self.device) for x in batched_inputs])
        logits = self.predict_logits(images, class_names)
        logits = F.interpolate(
            logits, size=targets.shape[-2:], mode="bilinear", align_corners=False
        )
        return {
            "loss_sem_seg": segmentation_loss(
                logits,
                targets,
                ignore_value=self.ignore_value,
                include_ignored=self.loss_includes_ignored,
            )
        }


def segmentation_loss(logits, targets, *, ignore_value, include_ignored=True):
    """
    Args:
        logits: (B, T, H, W); targets: (B, H, W) class indices or ``ignore_value``.
        include_ignored: True (published): ignored pixels stay in the mean with all-zero
            targets; False: they are left out.
    Returns:
        scalar loss: the mean binary cross-entropy of every (pixel, class) logit against the
        one-hot target (``F.binary_cross_entropy_with_logits``), computed by
        ``OneHotBinaryCrossEntropy`` without materialising the one-hot targets.
    """
    num_classes = logits.shape[1]
    valid = targets != ignore_value
    labels = targets[valid]
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        bad = sorted(set(labels[(labels < 0) | (labels >= num_classes)].unique().tolist()))
        raise ValueError(
            f"Label values {bad[:10]} are neither a class index (0..{num_classes - 1}) nor the "
            f"ignore value {ignore_value}: check the dataset's labels and "
            "MODEL.SEM_SEG_HEAD.IGNORE_VALUE / TRAIN_CLASS_JSON."
        )
    return OneHotBinaryCrossEntropy.apply(logits, targets, valid, include_ignored)


class OneHotBinaryCrossEntropy(torch.autograd.Function):
    """Mean binary cross-entropy of (B, T, H, W) logits against one-hot targets.

    Per element, BCE(x, y) = softplus(x) - y x, so the loss is
    (sum of softplus over the counted pixels' logits - sum of each labelled pixel's logit of
    its class) / (counted pixels x T), and its gradient is (sigmoid(x) - one_hot) / count on
    the counted pixels. Computed in the logits' own (B, T, H, W) layout, this replaces the
    published permute, one-hot scatter and masked copies (about 8 full-size temporaries; 1.5 s
    of a 22 s CPU training step of the paper model) by two passes; the values agree with
    ``F.binary_cross_entropy_with_logits`` up to float rounding. A batch without counted pixels
    has loss 0 and no gradient (the published mean over no element is NaN).
    """

    @staticmethod
    def forward(ctx, logits, targets, valid, include_ignored):
        labels = torch.where(valid, targets, 0).unsqueeze(1)
        weight = valid.unsqueeze(1).to(logits.dtype)
        per_pixel = F.softplus(logits).sum(1, keepdim=True)
        if not include_ignored:
            per_pixel = per_pixel * weight
        counted = per_pixel.numel() if include_ignored else int(valid.sum())
        labelled = (logits.gather(1, labels) * weight).sum()
        count = max(counted, 1) * logits.shape[1]
        ctx.save_for_backward(logits, labels, weight)
        ctx.include_ignored, ctx.count = include_ignored, count
        return (per_pixel.sum() - labelled) / count

    @staticmethod
    def backward(ctx, grad_output):
        logits, labels, weight = ctx.saved_tensors
        grad = torch.sigmoid(logits)
        if not ctx.include_ignored:
            grad.mul_(weight)
        grad.scatter_add_(1, labels, -weight)
        return grad.mul_(grad_output / ctx.count), None, None, None
