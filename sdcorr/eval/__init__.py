"""Evaluation: dataset readers, PCK metrics, and the resumable, shardable runner.

Readers (``spair``, ``pfpascal``, ``pfwillow``, ``ap10k``, ``tss``) all yield the same pair
records; :mod:`sdcorr.eval.datasets` names them and their protocol defaults.
``sdcorr eval`` (:mod:`sdcorr.commands.eval`, launched also by ``benchmarks/eval.py`` and
``benchmarks/spair.py``) is the command line over this package; the README's "SPair-71k
evaluation" and "Other benchmarks" sections are the user guide.
"""

from __future__ import annotations

from .datasets import DATASETS, get_dataset, load_pairs
from .pck import DEFAULT_ALPHAS, keypoint_hits, summarize, threshold_length
from .spair import CATEGORIES, SPairPair, load_spair, natural_name

__all__ = [
    "CATEGORIES",
    "DATASETS",
    "DEFAULT_ALPHAS",
    "SPairPair",
    "get_dataset",
    "keypoint_hits",
    "load_pairs",
    "load_spair",
    "natural_name",
    "summarize",
    "threshold_length",
]
