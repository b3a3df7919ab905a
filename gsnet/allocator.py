"""The C allocator's policy for freed memory (CPU runs on Linux with glibc)."""

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["keep_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt() parameters of glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Free memory at the top of the heap is returned to the system only beyond this many bytes
# (the largest value mallopt takes).
_TRIM_THRESHOLD = 2**31 - 1

_applied = None


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of returning it to the system.

    By default glibc serves every allocation above 32 MB with its own mmap and unmaps it when
    it is freed. Most activations of a GSNet step are larger (a (B*T, 32, 96, 96) decoder map
    of the paper model in training is 94 MB), so each step faults its whole working set in
    anew, page by page. Served from the heap, which is trimmed only when 2 GiB lie free at its
    top, the pages are mostly faulted once. The cost: the resident size stays near its
    high-water mark, which fragmentation raises a little. The measured effect is in the README
    (section "Speed") and the benchmark's JSON. Numerics are unchanged.

    Process-wide; the tools call it once at start-up, before the model is built. Returns
    whether the policy is in force (False off glibc, where nothing is changed).
    """
    global _applied
    if _applied is None:
        _applied = _set_glibc_policy()
        if _applied:
            logger.debug("glibc malloc: no mmap, heap trimmed beyond 2 GiB (keep_freed_memory)")
    return _applied


def _set_glibc_policy() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        is_glibc = hasattr(libc, "gnu_get_libc_version")  # musl's mallopt does nothing
    except (OSError, AttributeError):
        return False
    if not is_glibc:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
