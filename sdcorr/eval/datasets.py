"""The benchmarks ``benchmarks/eval.py`` runs, each with its reader and its protocol defaults.

Every reader returns the same pair records (:class:`sdcorr.eval.spair.SPairPair`), so the runner,
the PCK code, resume, sharding and ``--predictions`` are shared. A spec gives the defaults the
peers use for that dataset: threshold (``bbox``, ``img`` or ``kps``, see :mod:`sdcorr.eval.pck`),
comparison (``lt``: ``dist < α·L``; ``le``: ``<=``) and α values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from .ap10k import load_ap10k
from .common import select_pairs
from .pfpascal import load_pf_pascal
from .pfwillow import load_pf_willow
from .spair import SPairPair, load_spair
from .tss import load_tss


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark.

    Attributes:
        name: the ``--dataset`` value.
        title: printed name, recorded as ``eval.dataset``.
        load: ``load(root, split) -> pairs`` (SPair selects through its own reader).
        threshold: default PCK threshold.
        compare: default comparison, ``"lt"`` or ``"le"``.
        alphas: default α values.
        dense: thousands of points per pair: compact per-pair records.
    """

    name: str
    title: str
    load: Callable[[Path, str], list[SPairPair]]
    threshold: str
    compare: str
    alphas: tuple[float, ...]
    dense: bool = False


DATASETS: dict[str, DatasetSpec] = {
    "spair": DatasetSpec("spair", "SPair-71k", load_spair, "bbox", "lt", (0.1, 0.05, 0.01)),
    "pf-pascal": DatasetSpec(
        "pf-pascal", "PF-Pascal", load_pf_pascal, "img", "lt", (0.05, 0.1, 0.15)
    ),
    "pf-willow": DatasetSpec(
        "pf-willow", "PF-Willow", load_pf_willow, "kps", "lt", (0.05, 0.1, 0.15)
    ),
    "ap10k": DatasetSpec("ap10k", "AP-10K", load_ap10k, "bbox", "lt", (0.1, 0.05, 0.01)),
    "tss": DatasetSpec("tss", "TSS", load_tss, "img", "le", (0.05, 0.1, 0.15, 0.01), dense=True),
}


def get_dataset(name: str) -> DatasetSpec:
    """The spec of ``name``; an unknown name lists the valid ones."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}' (valid: {', '.join(DATASETS)})")
    return DATASETS[name]


def load_pairs(
    name: str,
    root: str | Path,
    split: str = "test",
    categories: Sequence[str] | None = None,
    sample: int | None = None,
    limit: int | None = None,
    seed: int = 42,
    replace: bool = False,
    layout: str = "large",
) -> list[SPairPair]:
    """Read and select the pairs of one dataset split (selection as in :func:`select_pairs`).

    Raises:
        DatasetError: the folder, a file or a row is missing or malformed, or nothing is
            selected; always before any model loads.
    """
    spec = get_dataset(name)
    if name == "spair":
        return load_spair(root, split, list(categories) if categories else None, sample, limit,
                          seed, layout, replace)  # fmt: skip
    pairs = select_pairs(spec.load(Path(root), split), categories, sample, limit, seed, replace)
    if not pairs:
        raise DatasetError(f"no {split} pairs selected under {root} (categories={categories})")
    return pairs
