"""SPair-71k evaluation: dataset reader, PCK metrics, and the resumable, shardable runner.

``benchmarks/spair.py`` is the command line over this package; the README's "SPair-71k
evaluation" section is the user guide.
"""

from __future__ import annotations

from .pck import DEFAULT_ALPHAS, keypoint_hits, summarize, threshold_length
from .spair import CATEGORIES, SPairPair, load_spair

__all__ = [
    "CATEGORIES",
    "DEFAULT_ALPHAS",
    "SPairPair",
    "keypoint_hits",
    "load_spair",
    "summarize",
    "threshold_length",
]
