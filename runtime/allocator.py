"""glibc malloc settings for a training process: freed tensor memory stays in the heap for the next step.

glibc serves a request of 128 KiB or more with a fresh mmap and unmaps it on free (the threshold grows with the
blocks freed, but at most to 32 MiB, and the heap above M_TRIM_THRESHOLD is handed back to the OS as well). A CPU
step allocates and frees the same large tensors every step, so each new temporary costs its page faults again:
on 2 cores a 2M-element quantizer chain of five temporaries took 11.5 ms, 2.6 ms with the settings below (PyTorch's
CPU tuning guide makes the same point for jemalloc/tcmalloc). Both thresholds are set to 1 GiB: blocks below it come
from the heap and freed memory is kept, so a step reuses the pages of the last one; the process holds its peak.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, glibc malloc.h
KEEP_BELOW = 1 << 30


def keep_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds to 1 GiB (module notes); False where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BELOW)) and bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BELOW))
