"""Keep freed memory in the process for the next training step (glibc's malloc only).

By default glibc gives every block over a threshold (128 KiB at first, rising to at most 32 MiB)
its own `mmap` and unmaps it when freed, and returns the top of its heap to the system once more
than twice that threshold is free there. A training step allocates and frees much the same
tensors every step: activations of a few MiB, and the vocabulary projection's blocks of 50–200
MiB, which are always over the threshold. Each block returned is faulted in again, page by page,
at its next use. Page faults are dear in a virtual machine, and a training
step that returns its large blocks faults them all in again every step.

`keep_freed_memory()` stops both: no block is mapped on its own (`M_MMAP_MAX` 0) and up to
`TRIM_THRESHOLD` of free memory stays at the heap's top (`M_TRIM_THRESHOLD`), so a step's tensors
come from memory the previous step freed, already resident, much as PyTorch's CUDA caching
allocator keeps freed blocks. It is a setting of the whole process, applied when a run starts
and left in place (glibc has no call that reads the old values back), so a run applies it only
when its caller asks: the CLI does, a library call with `tune_process=True` does, and
`train.keep_freed_memory` true or false decides either way. Elsewhere than glibc (macOS, musl,
Windows) it does nothing. Its cost is a peak a little higher, since blocks are no longer unmapped
between uses (docs/performance.md, "Freed memory").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt's parameter numbers (<malloc.h>)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes a C int: the largest threshold it accepts is 2 GiB - 1
TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed blocks for reuse; False where malloc is not glibc's or
    refused a setting (nothing else changes then)."""
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _glibc_mallopt() -> ctypes._CFuncPtr | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
    return mallopt
