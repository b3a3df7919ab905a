"""Whole-image and sliding-window inference as plain functions.

Both take ``predict``, a callable mapping CLIP-normalised views (N, 3, h, w) to logits
(N, T, h', w'), so they are independent of the model's internals. Images are raw (0-255)
float tensors (3, H, W), as Detectron2's test mapper delivers them; every image of a batch is
handled (the published code silently used the first one only).
"""

import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch.nn import functional as F

from .errors import ConfigError

__all__ = ["sliding_window_inference", "whole_image_inference", "window_positions"]


def _resize(x, size):
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def whole_image_inference(predict, images, output_sizes, *, normalize, size_divisibility):
    """
    Normalise each image, pad the batch at the bottom/right to a multiple of
    ``size_divisibility`` (value 0 after normalisation), predict, apply sigmoid, and resize each
    image's scores to its output size. As published, the padded strip stays part of the input
    and the low-resolution scores are cropped with the image's pixel size before resizing.

    Args:
        predict: (N, 3, h, w) normalised padded images -> (N, T, h', w') logits.
        images: list of (3, H_i, W_i) raw images.
        output_sizes: list of (height, width) to return the scores at.
        normalize: callable applied to each raw image.
        size_divisibility: padding multiple.
    Returns:
        list of (T, height_i, width_i) class scores in [0, 1].
    """
    batch = ImageList.from_tensors([normalize(image) for image in images], size_divisibility)
    scores = predict(batch.tensor).sigmoid()
    return [
        sem_seg_postprocess(score, image_size, height, width)
        for score, image_size, (height, width) in zip(scores, batch.image_sizes, output_sizes)
    ]


def window_positions(resolution, window, stride):
    """Top-left corners of the windows covering ``resolution`` (row-major, like nn.Unfold)."""
    rows = range(0, resolution[0] - window + 1, stride)
    cols = range(0, resolution[1] - window + 1, stride)
    return [(y, x) for y in rows for x in cols]


def check_window_geometry(resolution, window, stride):
    """Raise a clear error unless the windows tile ``resolution`` exactly."""
    for side in resolution:
        if side < window or (side - window) % stride:
            raise ConfigError(
                f"Sliding windows of {window} px every {stride} px do not tile a {side} px side: "
                "choose TEST.SLIDING_WINDOW_RESOLUTION, _SIZE and _STRIDE with "
                "(resolution - size) divisible by stride."
            )


def sliding_window_inference(
    predict, images, output_sizes, *, normalize, window, stride, resolution
):
    """
    The paper's evaluation: each image is resized to ``resolution``, cut into windows of
    ``window`` px every ``stride`` px, plus the image resized directly to ``window`` as a global
    view; all views of all images run as one batch. Window scores (sigmoid of the logits
    upsampled to ``window``) are averaged where windows overlap (``F.fold``'s overlap-add
    divided by the number of windows covering each pixel); the global view's scores are
    upsampled to ``resolution``; the result is their mean, resized to the output size.

    Args:
        predict: (N, 3, window, window) normalised views -> (N, T, h', w') logits.
        images: list of (3, H_i, W_i) raw float images.
        output_sizes: list of (height, width).
        normalize: callable applied to a batch of raw views.
        window, stride, resolution: the window geometry (384, 256, (640, 640) in the paper).
    Returns:
        list of (T, height_i, width_i) class scores in [0, 1].
    """
    check_window_geometry(resolution, window, stride)
    positions = window_positions(resolution, window, stride)
    views = []
    for image in images:
        image = image.float().unsqueeze(0)
        resized = _resize(image, resolution)[0]
        views.extend(resized[:, y : y + window, x : x + window] for y, x in positions)
        views.append(_resize(image, (window, window))[0])
    views_per_image = len(positions) + 1
    scores = _resize(predict(normalize(torch.stack(views))), (window, window)).sigmoid()

    def overlap_add(columns):  # (1, C * window * window, windows) -> (C, *resolution)
        return F.fold(columns, resolution, kernel_size=window, stride=stride)[0]

    coverage = overlap_add(scores.new_ones(1, window * window, len(positions)))
    results = []
    for index, (height, width) in enumerate(output_sizes):
        image_scores = scores[index * views_per_image : (index + 1) * views_per_image]
        # (windows, T, window, window) -> nn.Fold's columns (1, T * window * window, windows).
        folded = overlap_add(image_scores[:-1].flatten(1).T.unsqueeze(0))
        global_scores = _resize(image_scores[-1:], resolution)[0]
        merged = (folded / coverage + global_scores) / 2
        results.append(sem_seg_postprocess(merged, resolution, height, width))
    return results
