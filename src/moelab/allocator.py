"""Keep freed memory in the process: the training step's large temporaries without page faults.

A training step allocates and frees the same large activations every step ([tokens, d_ff] for a
wide feed-forward: 12 MB at 768 tokens and d_ff 4096). glibc's malloc serves blocks above its
mmap threshold (128 KiB at start, raised as blocks are freed, up to 32 MiB) with fresh `mmap`s
and gives freed memory at the top of its heap back to the kernel, so every step touches those
pages anew: each first touch is a page fault and a zeroed page. On a 2-core AMD EPYC a
frontier-v2 dense step (d_ff 4096) took 7,000 minor faults and 13 ms of system time per step.
Raising both thresholds keeps the memory in the heap for the next step; the arithmetic is
unchanged (same kernels, same order), so runs stay bit-identical. PyTorch's CPU tuning guide
makes the same point with jemalloc or tcmalloc; glibc's own switches need no new library.

benchmarks/allocator.py measures faults and step time with and without.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for it on 64-bit systems
TRIM_THRESHOLD = 2**30  # freed memory at the heap's top beyond this goes back to the kernel
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def reuse_freed_memory() -> bool:
    """Raise glibc malloc's mmap and trim thresholds for this process; True where they were set.
    Nothing is changed off Linux, under another C library, or where the environment already says
    how to allocate (MALLOC_*_ or GLIBC_TUNABLES, or a preloaded allocator such as jemalloc)."""
    if not sys.platform.startswith("linux") or any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    try:  # the C library's symbols are the process's own: no library search (a subprocess) per call
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
