"""Sliding-window inference: the F.fold overlap-add equals window-by-window accumulation."""

import torch
from torch.nn import functional as F

from gsnet.inference import sliding_window_inference, window_positions


def _loop_reference(image, predict, window, stride, resolution, output_size):
    """The published merge, one window at a time."""
    resized = F.interpolate(image[None], size=resolution, mode="bilinear", align_corners=False)
    positions = window_positions(resolution, window, stride)
    views = [resized[0, :, y : y + window, x : x + window] for y, x in positions]
    views.append(F.interpolate(image[None], (window, window), mode="bilinear")[0])
    scores = predict(torch.stack(views)).sigmoid()
    folded = torch.zeros(scores.shape[1], *resolution)
    coverage = torch.zeros(resolution)
    for (y, x), window_scores in zip(positions, scores[:-1]):
        folded[:, y : y + window, x : x + window] += window_scores
        coverage[y : y + window, x : x + window] += 1
    global_scores = F.interpolate(scores[-1:], size=resolution, mode="bilinear")[0]
    merged = (folded / coverage + global_scores) / 2
    return F.interpolate(merged[None], size=output_size, mode="bilinear")[0]


def test_overlap_add_equals_the_window_loop():
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 1, 1)

    def predict(views):  # (N, 3, w, w) -> (N, 4, w, w) logits
        return F.conv2d(views, weight) / 100

    image = torch.rand(3, 50, 70) * 255
    window, stride, resolution = 24, 16, (40, 56)
    (ours,) = sliding_window_inference(
        predict,
        [image],
        [(50, 70)],
        normalize=lambda x: x,
        window=window,
        stride=stride,
        resolution=resolution,
    )
    expected = _loop_reference(image, predict, window, stride, resolution, (50, 70))
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)
