"""The GSNet meta-architecture: normalise -> encoders -> head -> loss / inference.

Shapes: B images, T classes, D the joint width (512), H x W the cost-volume grid (24 x 24);
logits come out at 4H x 4W (96 x 96).
"""

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_sem_seg_head
from detectron2.structures import ImageList
from torch import nn
from torch.nn import functional as F

from .checkpoint import rename_released_keys_hook
from .data.class_names import check_class_names, load_class_names
from .errors import ConfigError
from .inference import check_window_geometry, sliding_window_inference, whole_image_inference
from .modeling.encoder import DENSE, Encoder
from .modeling.fast_paths import OneHotBinaryCrossEntropy
from .modeling.generalist import build_generalist
from .modeling.registry import import_component_modules
from .modeling.specialist import build_specialist
from .modeling.text_queries import TextQueries

__all__ = ["GSNet"]

INFERENCE_PRECISIONS = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@META_ARCH_REGISTRY.register()
class GSNet(nn.Module):
    """GSNet: a generalist (CLIP) and a specialist (remote-sensing ViT) stream, whose cost
    volumes against the text queries are fused, aggregated and decoded into per-class masks.
    """

    @configurable
    def __init__(
        self,
        *,
        generalist: Encoder,
        specialist: Encoder | None,
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
            generalist: the generalist encoder (its text tower is always used); see
                gsnet/modeling/generalist.py.
            specialist: the specialist encoder, or None (single-stream ablation); see
                gsnet/modeling/specialist.py.
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
            raise ConfigError(
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
        import_component_modules(cfg.MODEL.COMPONENT_MODULES)
        generalist = build_generalist(cfg)
        shapes = {"generalist": generalist.output_shape(), "specialist": None}
        specialist = None
        if head.USE_DINO_CORR:
            specialist = build_specialist(cfg, shapes["generalist"][DENSE])
            shapes["specialist"] = specialist.output_shape()
        train_class_names = load_class_names(head.TRAIN_CLASS_JSON)
        if head.NUM_CLASSES != len(train_class_names):
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={head.NUM_CLASSES} contradicts "
                f"TRAIN_CLASS_JSON={head.TRAIN_CLASS_JSON} ({len(train_class_names)} classes): "
                "set NUM_CLASSES to the number of names in the JSON."
            )
        return {
            "generalist": generalist,
            "specialist": specialist,
            "use_generalist_image": head.USE_CLIP_CORR,
            "text_queries": TextQueries(prompt_ensemble_type=cfg.MODEL.PROMPT_ENSEMBLE_TYPE),
            "sem_seg_head": build_sem_seg_head(cfg, shapes),
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
        self.test_class_names = check_class_names(list(class_names), "The class list")

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
        logits: (B, T, H, W); targets: (B, H, W) class indices or ``ignore_value`` (checked
            where the labels are read, by GSNetSemanticDatasetMapper).
        include_ignored: True (published): ignored pixels stay in the mean with all-zero
            targets; False: they are left out.
    Returns:
        scalar loss: the mean binary cross-entropy of every (pixel, class) logit against the
        one-hot target (``F.binary_cross_entropy_with_logits``), computed by
        ``OneHotBinaryCrossEntropy`` without materialising the one-hot targets.
    """
    valid = targets != ignore_value
    return OneHotBinaryCrossEntropy.apply(logits, targets, valid, include_ignored)
