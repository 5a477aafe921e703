"""Process-wide settings a caller may ask for: prefalign applies them only when asked.

Nothing here imports torch, so the CLI can apply them before anything heavy loads.
"""

from __future__ import annotations

import os

PRIMITIVE_CACHE_CAPACITY = "32"


def cap_kernel_caches() -> None:
    """Cap oneDNN's and torch's ideep kernel caches at PRIMITIVE_CACHE_CAPACITY entries each.

    Both keep up to 1,024 compiled kernels, one per product shape, and packed rows give a new
    shape almost every step, so a long run's memory grows until they fill (docs/performance.md,
    "oneDNN kernel caches"). They are read once, at the first oneDNN product, so call this
    before any; a value the user exported wins. It sets environment variables of the whole
    process, so only the CLI and callers that ask (`tune_process=True`) call it.
    """
    for variable in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(variable, PRIMITIVE_CACHE_CAPACITY)
