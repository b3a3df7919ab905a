"""Autocast queries that also hold for the meta device (shape-only runs, where autocast
does not exist: tools/model_summary.py and the config tests build the large models there)."""

import contextlib

import torch

__all__ = ["autocast_disabled", "autocast_enabled"]


def autocast_enabled(device_type: str) -> bool:
    return device_type != "meta" and torch.is_autocast_enabled(device_type)


def autocast_disabled(device_type: str):
    """A context in which ``device_type`` computes in full precision."""
    if device_type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)
