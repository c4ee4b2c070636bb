"""Evaluation as a library: dataset readers, PCK, protocols, per-pair results and the runner.

Readers (``spair``, ``pfpascal``, ``pfwillow``, ``ap10k``, ``tss``) open a split as the same
:class:`~sdcorr.eval.pairs.Pair` records; :mod:`sdcorr.eval.datasets` names them with their
protocol defaults, and :func:`~sdcorr.eval.protocol.resolve_protocol` turns a dataset and the
user's options into the one :class:`~sdcorr.eval.protocol.Protocol` that
:func:`~sdcorr.eval.runner.evaluate` receives. No command line here: ``sdcorr eval``
(:mod:`sdcorr.commands.eval`, launched also by ``benchmarks/eval.py`` and
``benchmarks/spair.py``) is the command line over this package; the README's "SPair-71k
evaluation" and "Other benchmarks" sections are the user guide.
"""

from __future__ import annotations

from .datasets import DATASETS, get_dataset
from .pairs import Pair, natural_name
from .pck import DEFAULT_ALPHAS, Scoring, keypoint_hits, summarize, threshold_length
from .protocol import Protocol, load_pairs, resolve_protocol
from .spair import CATEGORIES, SPairPair, load_spair

__all__ = [
    "CATEGORIES",
    "DATASETS",
    "DEFAULT_ALPHAS",
    "Pair",
    "Protocol",
    "SPairPair",
    "Scoring",
    "get_dataset",
    "keypoint_hits",
    "load_pairs",
    "load_spair",
    "natural_name",
    "resolve_protocol",
    "summarize",
    "threshold_length",
]
