"""A dataset's evaluation protocol, resolved once from its spec and the user's options.

:func:`resolve_protocol` checks the options (before any model loads) and returns the one
:class:`Protocol` the runner receives: which pairs to read and select, how a prediction is
scored (the run's own :class:`~sdcorr.eval.pck.Scoring` and α values), which further scorings
``summary.json["by_protocol"]`` reports, what a per-pair record holds, how a model predicts
on this dataset (sparse keypoint transfer, GeoAware-SC's left/right renaming for flip-aligned
presets, or TSS's dense flow) and what the run records about itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from ..outdir import normalise_path
from .common import Selection, read_selected
from .datasets import DatasetSpec, get_dataset
from .pairs import Pair
from .pck import Scoring, alpha_key, is_complete, keypoint_hits, summarize

Predictor = Callable[[Pair], np.ndarray]


@dataclass(frozen=True)
class Protocol:
    """Everything about a benchmark run except the model.

    Attributes:
        spec: the dataset (reader, defaults, further scorings).
        scoring: how this run scores (``summary.json["pck"]``).
        alphas: the α values.
        selection: which pairs.
    """

    spec: DatasetSpec
    scoring: Scoring
    alphas: tuple[float, ...]
    selection: Selection = field(default_factory=Selection)

    @property
    def tables(self) -> tuple[Scoring, ...]:
        """The scorings of ``by_protocol``: the dataset's, and this run's own if it is not
        among them (so ``by_protocol[scoring.key]`` always equals ``pck``)."""
        keys = {s.key for s in self.spec.variants}
        return self.spec.variants + (() if self.scoring.key in keys else (self.scoring,))

    def load_pairs(self, root: str | Path) -> list[Pair]:
        """The selected pairs under ``root``, every file checked (before any model loads).

        Raises:
            DatasetError: a folder, file or row is missing or malformed, or nothing is selected.
        """
        root = Path(root).expanduser()
        split = self.spec.open(root, self.selection.split, self.selection.layout)
        return read_selected(split, self.selection, root)

    def score(self, pair: Pair, pred: np.ndarray) -> dict[str, Any]:
        """The JSONL record of one pair (the threshold from its **target**).

        Full records hold ``kps_ids``, ``pred_kps``, ``true_kps`` and ``hits``; compact ones
        (``spec.compact``) ``n_kps``, ``hit_counts``, ``mean_error_px`` and ``by_protocol``,
        the counts of every scoring of :attr:`tables`.

        Raises:
            DatasetError: ``pred`` is not ``(K, 2)`` for the pair's ``K`` keypoints.
        """
        pred = np.asarray(pred, dtype=np.float64)
        if pred.shape != pair.trg_kps.shape:
            raise DatasetError(
                f"pair {pair.name}: {pred.shape[0] if pred.ndim else 0} predicted keypoints, "
                f"expected {pair.num_kps}"
            )
        sc = self.scoring
        p, t, length = sc.measure(pred, pair.trg_kps, pair.trg_bbox, pair.trg_size)
        hits = keypoint_hits(p, t, length, self.alphas, sc.compare, sc.precision)
        rec: dict[str, Any] = {"pair": pair.name, "category": pair.category, "threshold_px": length}
        if not self.spec.compact:
            rec.update(kps_ids=list(pair.kps_ids), pred_kps=pred.tolist(),
                       true_kps=pair.trg_kps.tolist(), hits=hits)  # fmt: skip
            return rec
        err = np.linalg.norm(pred - pair.trg_kps, axis=1)
        rec["n_kps"] = pair.num_kps
        rec["hit_counts"] = {k: int(sum(v)) for k, v in hits.items()}
        rec["mean_error_px"] = float(err.mean()) if len(err) else None
        rec["by_protocol"] = {s.key: {k: int(sum(v)) for k, v in self._hits(s, pair, pred).items()}
                              for s in self.tables}  # fmt: skip
        return rec

    def _hits(self, scoring: Scoring, pair: Pair, pred: Any) -> dict[str, list[bool]]:
        return scoring.hits(pred, pair.trg_kps, pair.trg_bbox, pair.trg_size, self.alphas)

    def is_complete(self, record: Any) -> bool:
        """Whether ``record`` holds everything the summary reads (else its pair is redone)."""
        if not is_complete(record, self.alphas):
            return False
        if not self.spec.compact:
            return isinstance(record.get("pred_kps"), list)
        counts = record.get("by_protocol")
        keys = [alpha_key(a) for a in self.alphas]
        return isinstance(counts, dict) and all(
            isinstance(counts.get(s.key), dict)
            and all(isinstance(counts[s.key].get(k), int) for k in keys)
            for s in self.tables
        )

    def by_protocol(
        self, records: Sequence[Mapping[str, Any]], pairs: Sequence[Pair]
    ) -> dict[str, dict[str, Any]]:
        """``{scoring key: PCK table}`` (the structure of ``pck``) of every scoring of
        :attr:`tables`, recomputed from the records' predictions and the pairs' annotations
        (compact records: from their stored counts)."""
        by_name = {p.name: p for p in pairs}
        out: dict[str, dict[str, Any]] = {}
        for s in self.tables:
            rows = []
            for r in records:
                row: dict[str, Any] = {"pair": r["pair"], "category": r["category"]}
                if self.spec.compact:
                    row.update(n_kps=r["n_kps"], hit_counts=r["by_protocol"][s.key])
                else:
                    row["hits"] = self._hits(s, by_name[r["pair"]], r["pred_kps"])
                rows.append(row)
            out[s.key] = summarize(rows, self.alphas)
        return out

    def predictor(self, base: Any) -> Predictor:
        """How a model predicts on this dataset, given a ``ModelPredictor``: TSS's dense flow,
        GeoAware-SC's left/right renaming when the pipeline flip-aligns and the keypoints
        have partners, else ``base`` itself."""
        if self.spec.dense_flow:
            from .tss import FlowPredictor

            return FlowPredictor(base)
        if self.spec.partners is not None and getattr(base, "flip_align", False):
            from .flipids import FlipIdPredictor

            return FlipIdPredictor(base, self.spec.partners)
        return base

    def config(self, root: str | Path, n_pairs: int) -> dict[str, Any]:
        """The JSON-ready ``eval`` section of ``config.json`` (checked on resume)."""
        sel, sc = self.selection, self.scoring
        return {
            "dataset": self.spec.title,
            "root": normalise_path(root),
            "split": sel.split,
            "layout": sel.layout if self.spec.layouts else None,
            "categories": list(sel.categories) if sel.categories else None,
            "sample": sel.sample,
            "sample_with_replacement": sel.replace,
            "limit": sel.limit,
            "seed": sel.seed,
            "n_pairs": n_pairs,
            "alphas": [float(a) for a in self.alphas],
            "threshold": sc.threshold,
            "compare": sc.compare,
            "frame": sc.frame,
            "precision": sc.precision,
            "dense_flow": self.spec.dense_flow,
            "flip_ids": self.spec.partners is not None,
        }


def resolve_protocol(
    dataset: str,
    threshold: str | None = None,
    compare: str | None = None,
    alphas: Sequence[float] | None = None,
    selection: Selection | None = None,
) -> Protocol:
    """The protocol of ``dataset`` with the user's overrides (``None``: the dataset's default).

    Raises:
        DatasetError: unknown dataset or split layout, or a selection that cannot work.
        ConfigError: a threshold, comparison or α that cannot work.
    """
    spec = get_dataset(dataset)
    alphas = tuple(float(a) for a in (alphas or spec.alphas))
    if not all(0 < a <= 1 for a in alphas):
        raise ConfigError(f"--alphas must lie in (0, 1], got {list(alphas)}")
    base = spec.scoring
    scoring = Scoring(threshold or base.threshold, compare or base.compare, base.frame,
                      base.precision)  # fmt: skip
    sel = selection or Selection()
    if spec.layouts and sel.layout not in spec.layouts:
        raise DatasetError(f"unknown layout '{sel.layout}' (valid: {', '.join(spec.layouts)})")
    return Protocol(spec, scoring, alphas, sel)


def load_pairs(name: str, root: str | Path, split: str = "test", **selection: Any) -> list[Pair]:
    """The pairs of dataset ``name`` under ``root`` (selection as :class:`Selection`).

    Raises:
        DatasetError: see :meth:`Protocol.load_pairs`.
    """
    cats = selection.pop("categories", None)
    sel = Selection(split, categories=tuple(cats) if cats else None, **selection)
    return resolve_protocol(name, selection=sel).load_pairs(root)
