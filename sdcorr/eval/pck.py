"""PCK@α: the Percentage of Correct Keypoints, as used for SPair-71k.

Definition (the one place it is written down; the README repeats it for users):

* A predicted target keypoint is **correct** at α when its Euclidean distance to the true target
  keypoint, in the target's original pixels, is **strictly less** than ``α · L``.
* ``L`` is ``max(x2 - x1, y2 - y1)`` of the **target** bounding box (``threshold="bbox"``, the
  default, as in DIFT, SD-DINO and GeoAware-SC; no ``+1``), or ``max(W, H)`` of the target
  image (``threshold="img"``; numbers are several points higher and must not be mixed).
* Only the keypoints the pair file lists are scored (those visible in both images).
* **per_keypoint** pools all keypoints: total correct / total keypoints.
* **per_image** averages over pairs the fraction of a pair's keypoints that are correct
  (GeoAware-SC's default; pairs without keypoints are skipped).
* Both are given overall, per category, and as ``category_mean`` (the plain mean over
  categories, SD-DINO's "Average"). Values are percentages in ``[0, 100]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError

DEFAULT_ALPHAS: tuple[float, ...] = (0.1, 0.05, 0.01)
THRESHOLDS: tuple[str, ...] = ("bbox", "img")
_METRICS = ("per_keypoint", "per_image")


def alpha_key(alpha: float) -> str:
    """The JSON key of an α: ``0.1 → "0.1"``, ``0.05 → "0.05"``."""
    return f"{float(alpha):g}"


def threshold_length(bbox: Sequence[float], size: Sequence[int], mode: str = "bbox") -> float:
    """``L`` of the PCK threshold ``α · L`` for a target image.

    Args:
        bbox: target ``(x1, y1, x2, y2)``.
        size: target ``(W, H)``.
        mode: ``"bbox"`` (``max(x2 - x1, y2 - y1)``) or ``"img"`` (``max(W, H)``).
    """
    if mode == "bbox":
        x1, y1, x2, y2 = bbox
        return float(max(x2 - x1, y2 - y1))
    if mode == "img":
        return float(max(size[0], size[1]))
    raise ConfigError(f"unknown PCK threshold '{mode}' (valid: {', '.join(THRESHOLDS)})")


def keypoint_hits(
    pred: np.ndarray, true: np.ndarray, length: float, alphas: Iterable[float] = DEFAULT_ALPHAS
) -> dict[str, list[bool]]:
    """Which predictions are correct at each α.

    Args:
        pred: ``(K, 2)`` predicted ``(x, y)`` in the target's original pixels.
        true: ``(K, 2)`` true ``(x, y)``.
        length: ``L`` from :func:`threshold_length`.
        alphas: the α values.

    Returns:
        ``{alpha_key(α): [K bools]}`` with ``dist < α · L``.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    true = np.asarray(true, dtype=np.float64).reshape(-1, 2)
    if pred.shape != true.shape:
        raise ValueError(f"{len(pred)} predicted keypoints for {len(true)} true ones")
    dist = np.linalg.norm(pred - true, axis=1)
    return {alpha_key(a): (dist < a * length).tolist() for a in alphas}


def _rates(records: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """per_keypoint, per_image and counts over ``records`` for α key ``key``."""
    hits = [np.asarray(r["hits"][key], dtype=bool) for r in records]
    n_kps = sum(len(h) for h in hits)
    with_kps = [h for h in hits if len(h)]
    return {
        "per_keypoint": 100.0 * sum(int(h.sum()) for h in hits) / n_kps if n_kps else None,
        "per_image": 100.0 * float(np.mean([h.mean() for h in with_kps])) if with_kps else None,
        "n_pairs": len(records),
        "n_keypoints": n_kps,
    }


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def summarize(
    records: Sequence[Mapping[str, Any]], alphas: Iterable[float] = DEFAULT_ALPHAS
) -> dict[str, dict[str, Any]]:
    """Aggregate per-pair hits into PCK tables.

    Args:
        records: one mapping per pair with ``"category"`` and ``"hits"`` (as returned by
            :func:`keypoint_hits`). Order does not matter: records are sorted by ``"pair"``
            (when present) so that any sharding gives bit-identical numbers. A rate over no
            keypoints is ``None``.
        alphas: the α values to report (each must be present in every record's hits).

    Returns:
        ``{alpha_key: {"per_keypoint", "per_image", "n_pairs", "n_keypoints",
        "category_mean": {"per_keypoint", "per_image"}, "per_category": {cat: {...}}}}``.
    """
    records = sorted(records, key=lambda r: str(r.get("pair", "")))
    cats = sorted({str(r["category"]) for r in records})
    out: dict[str, dict[str, Any]] = {}
    for a in alphas:
        key = alpha_key(a)
        table = _rates(records, key)
        per_cat = {c: _rates([r for r in records if r["category"] == c], key) for c in cats}
        table["category_mean"] = {m: _mean(per_cat[c][m] for c in cats) for m in _METRICS}
        table["per_category"] = per_cat
        out[key] = table
    return out


def markdown_table(pck: Mapping[str, Mapping[str, Any]], metric: str = "per_image") -> str:
    """A markdown table: one row per category (plus mean and all), one column per α."""
    keys = list(pck)
    cats = sorted(next(iter(pck.values()))["per_category"]) if keys else []
    head = "| category | pairs | " + " | ".join(f"PCK@{k}" for k in keys) + " |"
    rows = [head, "|---|---:|" + "---:|" * len(keys)]
    for c in cats:
        cells = [pck[k]["per_category"][c][metric] for k in keys]
        n = pck[keys[0]]["per_category"][c]["n_pairs"]
        rows.append(f"| {c} | {n} | " + " | ".join(_fmt(v) for v in cells) + " |")
    if keys:
        mean = [pck[k]["category_mean"][metric] for k in keys]
        rows.append("| *category mean* | | " + " | ".join(_fmt(v) for v in mean) + " |")
        every = [pck[k][metric] for k in keys]
        n = pck[keys[0]]["n_pairs"]
        rows.append(f"| **all** | {n} | " + " | ".join(_fmt(v) for v in every) + " |")
    return "\n".join(rows)
