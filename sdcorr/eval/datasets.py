"""The benchmarks, each with its reader and the protocol its peers use.

Every reader opens a split as the same :class:`~sdcorr.eval.common.Split` of
:class:`~sdcorr.eval.pairs.Pair` records, so selection, the runner, the PCK code, resume,
sharding and ``--predictions`` are shared. A spec gives the defaults the peers use for that
dataset (threshold kind, comparison, α values, see :mod:`sdcorr.eval.pck`) and the other ways
of scoring it that the literature reports (the ``by_protocol`` tables of ``summary.json``).
:func:`sdcorr.eval.protocol.resolve_protocol` turns a spec and the user's options into the one
:class:`~sdcorr.eval.protocol.Protocol` the runner receives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from . import ap10k, pfpascal, pfwillow, spair, tss
from .common import Split
from .flipids import ap10k_partners, spair_partners
from .pck import Scoring


def _both(threshold: str, frame: int | None = None) -> tuple[Scoring, ...]:
    return Scoring(threshold, "lt", frame), Scoring(threshold, "le", frame)


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark.

    Attributes:
        name: the ``--dataset`` value.
        title: printed name, recorded as ``eval.dataset``.
        open: ``open(root, split, layout) -> Split`` (the reader).
        scoring: the default scoring (threshold, comparison, frame, precision).
        alphas: default α values.
        variants: further scorings reported in ``summary.json["by_protocol"]``.
        layouts: pair-list variants of a split (SPair's ``large``/``small``), else ``()``.
        compact: thousands of points per pair: compact per-pair records.
        dense_flow: predictions come from sd-dino's dense flow over the pair padded to a common
            size (TSS, :class:`~sdcorr.eval.tss.FlowPredictor`).
        partners: ``partners(category) -> {id: partner id}`` of left/right keypoints, used by
            flip-aligned presets (GeoAware-SC's renaming), or ``None``.
    """

    name: str
    title: str
    open: Callable[[Path, str, str], Split]
    scoring: Scoring
    alphas: tuple[float, ...]
    variants: tuple[Scoring, ...]
    layouts: tuple[str, ...] = ()
    compact: bool = False
    dense_flow: bool = False
    partners: Callable[[str], dict[str, str]] | None = None


DATASETS: dict[str, DatasetSpec] = {
    "spair": DatasetSpec(
        "spair", "SPair-71k", spair.open_split, Scoring("bbox", "lt"), (0.1, 0.05, 0.01),
        (*_both("bbox"), *_both("img")), layouts=("large", "small"), partners=spair_partners,
    ),
    "pf-pascal": DatasetSpec(
        "pf-pascal", "PF-Pascal", pfpascal.open_split, Scoring("img", "lt"), (0.05, 0.1, 0.15),
        _both("img"),
    ),
    "pf-willow": DatasetSpec(
        "pf-willow", "PF-Willow", pfwillow.open_split, Scoring("kps", "lt"), (0.05, 0.1, 0.15),
        (*_both("kps"), *_both("img"), Scoring("kps", "le", 768, "float32")),
    ),
    "ap10k": DatasetSpec(
        "ap10k", "AP-10K", ap10k.open_split, Scoring("bbox", "lt"), (0.1, 0.05, 0.01),
        (*_both("bbox"), *_both("img")), partners=ap10k_partners,
    ),
    "tss": DatasetSpec(
        "tss", "TSS", tss.open_split, Scoring("img", "le", precision="float32"),
        (0.05, 0.1, 0.15, 0.01),
        (Scoring("img", "lt", precision="float32"), Scoring("img", "le", precision="float32")),
        compact=True, dense_flow=True,
    ),
}  # fmt: skip


def get_dataset(name: str) -> DatasetSpec:
    """The spec of ``name``; an unknown name lists the valid ones."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}' (valid: {', '.join(DATASETS)})")
    return DATASETS[name]
