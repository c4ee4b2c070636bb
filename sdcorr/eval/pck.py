"""PCK@α: the Percentage of Correct Keypoints, as used for SPair-71k and its peers.

Definition (the one place it is written down; the README repeats it for users):

* A predicted target keypoint is **correct** at α when its Euclidean distance to the true target
  keypoint, in the target's original pixels, is **strictly less** than ``α · L`` (``compare=
  "lt"``: SD-DINO, GeoAware-SC), or at most ``α · L`` (``"le"``: DIFT, SD4Match, sd-dino's TSS).
* ``L`` is ``max(x2 - x1, y2 - y1)`` of the **target** bounding box (``threshold="bbox"``, the
  SPair-71k default, as in DIFT, SD-DINO and GeoAware-SC; no ``+1``), ``max(W, H)`` of the target
  image (``threshold="img"``: PF-Pascal's α_img; on SPair numbers are several points higher and
  must not be mixed), or the largest side of the extent of the target keypoints
  (``threshold="kps"``: PF-Willow).
* A :class:`Scoring` may measure in another frame: ``frame=N`` stretches the target image to
  ``N x N`` (both axes scaled separately) and measures distances and ``L`` there, with true
  points at or beyond the border moved ``1e-4`` inside it, as SD4Match's
  ``regularise_coordinates`` does.
  ``precision="float32"`` computes the distance and ``α · L`` in float32, as sd-dino's TSS script
  (its ties count as correct there; float64 may put them a rounding error outside).
* Only the keypoints the pair file lists are scored (those visible in both images).
* **per_keypoint** pools all keypoints: total correct / total keypoints.
* **per_image** averages over pairs the fraction of a pair's keypoints that are correct
  (GeoAware-SC's default; pairs without keypoints are skipped).
* Both are given overall, per category, as ``category_mean`` (the plain mean over categories,
  SD-DINO's "Average") and as ``category_weighted`` (the per-category values averaged with the
  categories' pair counts as weights: SD-DINO's "Weighted" for ``per_keypoint``; for
  ``per_image`` it equals the overall per-image value). Values are percentages in ``[0, 100]``.
* A record holds either per-keypoint ``hits`` (``{α: [bool, ...]}``) or, for dense benchmarks
  with thousands of points per pair (TSS), ``hit_counts`` (``{α: correct}``) and ``n_kps``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

DEFAULT_ALPHAS: tuple[float, ...] = (0.1, 0.05, 0.01)
THRESHOLDS: tuple[str, ...] = ("bbox", "img", "kps")
COMPARES: tuple[str, ...] = ("lt", "le")
PRECISIONS: tuple[str, ...] = ("float64", "float32")
REGULARISE_EPS = 1e-4  # SD4Match's regularise_coordinates(..., eps=1e-4)
_METRICS = ("per_keypoint", "per_image")


def alpha_key(alpha: float) -> str:
    """The JSON key of an α: ``0.1 → "0.1"``, ``0.05 → "0.05"``."""
    return f"{float(alpha):g}"


def threshold_length(
    bbox: Sequence[float], size: Sequence[int], mode: str = "bbox", kps: Any = None
) -> float:
    """``L`` of the PCK threshold ``α · L`` for a target image.

    Args:
        bbox: target ``(x1, y1, x2, y2)``.
        size: target ``(W, H)``.
        mode: ``"bbox"`` (``max(x2 - x1, y2 - y1)``), ``"img"`` (``max(W, H)``) or ``"kps"``
            (largest side of the extent of ``kps``).
        kps: ``(K, 2)`` true target keypoints (``mode="kps"`` only).
    """
    if mode == "bbox":
        x1, y1, x2, y2 = bbox
        return float(max(x2 - x1, y2 - y1))
    if mode == "img":
        return float(max(size[0], size[1]))
    if mode == "kps":
        pts = np.asarray(kps, dtype=np.float64).reshape(-1, 2)
        if not len(pts):
            return 0.0
        return float((pts.max(axis=0) - pts.min(axis=0)).max())
    raise ConfigError(f"unknown PCK threshold '{mode}' (valid: {', '.join(THRESHOLDS)})")


def keypoint_hits(
    pred: np.ndarray,
    true: np.ndarray,
    length: float,
    alphas: Iterable[float] = DEFAULT_ALPHAS,
    compare: str = "lt",
    precision: str = "float64",
) -> dict[str, list[bool]]:
    """Which predictions are correct at each α.

    Args:
        pred: ``(K, 2)`` predicted ``(x, y)`` (the frame of ``true``).
        true: ``(K, 2)`` true ``(x, y)``.
        length: ``L`` from :func:`threshold_length`.
        alphas: the α values.
        compare: ``"lt"`` (``dist < α · L``) or ``"le"`` (``dist <= α · L``).
        precision: ``"float64"``, or ``"float32"`` (the difference, its norm and ``α · L``
            rounded to float32 as a float32 tensor computes them).

    Returns:
        ``{alpha_key(α): [K bools]}``.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    true = np.asarray(true, dtype=np.float64).reshape(-1, 2)
    if pred.shape != true.shape:
        raise ValueError(f"{len(pred)} predicted keypoints for {len(true)} true ones")
    if compare not in COMPARES:
        raise ConfigError(f"unknown comparison '{compare}' (valid: {', '.join(COMPARES)})")
    below = np.less_equal if compare == "le" else np.less
    if precision == "float32":
        d = (pred - true).astype(np.float32)
        dist = np.sqrt((d * d).sum(axis=1, dtype=np.float32))
        return {alpha_key(a): below(dist, np.float32(a * length)).tolist() for a in alphas}
    if precision != "float64":
        raise ConfigError(f"unknown precision '{precision}' (valid: {', '.join(PRECISIONS)})")
    dist = np.linalg.norm(pred - true, axis=1)
    return {alpha_key(a): below(dist, a * length).tolist() for a in alphas}


@dataclass(frozen=True)
class Scoring:
    """One way to score predictions: what ``L`` is, how the distance is compared, where.

    Attributes:
        threshold: ``"bbox"``, ``"img"`` or ``"kps"`` (see :func:`threshold_length`).
        compare: ``"lt"`` or ``"le"``.
        frame: ``None`` (original pixels) or ``N``: the target stretched to ``N x N``
            (SD4Match's 768 frame).
        precision: ``"float64"`` or ``"float32"`` (sd-dino's TSS).
    """

    threshold: str = "bbox"
    compare: str = "lt"
    frame: int | None = None
    precision: str = "float64"

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLDS:
            raise ConfigError(
                f"unknown PCK threshold '{self.threshold}' (valid: {', '.join(THRESHOLDS)})"
            )
        if self.compare not in COMPARES:
            raise ConfigError(f"unknown comparison '{self.compare}' (valid: lt, le)")

    @property
    def key(self) -> str:
        """``"bbox-lt"``, ``"img-le"``, ``"kps-le@768"``: the ``by_protocol`` key."""
        return f"{self.threshold}-{self.compare}" + (f"@{self.frame}" if self.frame else "")

    def measure(
        self,
        pred: np.ndarray,
        true: np.ndarray,
        bbox: Sequence[float],
        size: Sequence[int],
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """``(pred, true, L)`` in this scoring's frame.

        Args:
            pred: ``(K, 2)`` predicted target points, original pixels.
            true: ``(K, 2)`` true target points, original pixels.
            bbox: target ``(x1, y1, x2, y2)``.
            size: target ``(W, H)``.
        """
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
        true = np.asarray(true, dtype=np.float64).reshape(-1, 2)
        if self.frame is None:
            return pred, true, threshold_length(bbox, size, self.threshold, true)
        n = self.frame
        s = np.array([n / size[0], n / size[1]])
        x1, y1, x2, y2 = bbox
        box = (x1 * s[0], y1 * s[1], x2 * s[0], y2 * s[1])
        true_n = true * s
        length = threshold_length(box, (n, n), self.threshold, true_n)
        eps = REGULARISE_EPS  # SD4Match: <= 0 -> eps, >= N - 1 -> N - 1 - eps, others kept
        true_n = np.where(true_n <= 0, eps, np.where(true_n >= n - 1, n - 1 - eps, true_n))
        return pred * s, true_n, length

    def hits(
        self,
        pred: np.ndarray,
        true: np.ndarray,
        bbox: Sequence[float],
        size: Sequence[int],
        alphas: Iterable[float],
    ) -> dict[str, list[bool]]:
        """``{alpha_key(α): [K bools]}`` of ``(K, 2)`` predictions (arguments as :meth:`measure`)."""
        p, t, length = self.measure(pred, true, bbox, size)
        return keypoint_hits(p, t, length, alphas, self.compare, self.precision)


def hit_count(record: Mapping[str, Any], key: str) -> tuple[int, int]:
    """``(correct, scored)`` keypoints of one record at α key ``key`` (either record form)."""
    if "hit_counts" in record:
        return int(record["hit_counts"][key]), int(record["n_kps"])
    hits = record["hits"][key]
    return int(sum(bool(h) for h in hits)), len(hits)


def is_complete(record: Any, alphas: Iterable[float] | None = None) -> bool:
    """Whether ``record`` has everything :func:`summarize` reads (for ``alphas`` if given)."""
    if not isinstance(record, dict) or "pair" not in record or "category" not in record:
        return False
    keys = [alpha_key(a) for a in alphas] if alphas is not None else None
    if "hit_counts" in record:
        counts = record["hit_counts"]
        ok = isinstance(counts, dict) and isinstance(record.get("n_kps"), int)
        return ok and all(isinstance(counts.get(k), int) for k in (keys or counts))
    hits = record.get("hits")
    if not isinstance(hits, dict) or not hits:
        return False
    return all(isinstance(hits.get(k), list) for k in (keys or hits))


def _rates(records: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """per_keypoint, per_image and counts over ``records`` for α key ``key``."""
    counts = [hit_count(r, key) for r in records]
    n_kps = sum(n for _, n in counts)
    fractions = [c / n for c, n in counts if n]
    return {
        "per_keypoint": 100.0 * sum(c for c, _ in counts) / n_kps if n_kps else None,
        "per_image": 100.0 * float(np.mean(fractions)) if fractions else None,
        "n_pairs": len(records),
        "n_keypoints": n_kps,
    }


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _weighted(per_cat: Mapping[str, Mapping[str, Any]], metric: str) -> float | None:
    """Mean of the categories' ``metric`` weighted by their pair counts (SD-DINO "Weighted")."""
    pairs = [(c[metric], c["n_pairs"]) for c in per_cat.values() if c[metric] is not None]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else None


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
        "category_mean": {"per_keypoint", "per_image"},
        "category_weighted": {"per_keypoint", "per_image"}, "per_category": {cat: {...}}}}``.
    """
    records = sorted(records, key=lambda r: str(r.get("pair", "")))
    cats = sorted({str(r["category"]) for r in records})
    out: dict[str, dict[str, Any]] = {}
    for a in alphas:
        key = alpha_key(a)
        table = _rates(records, key)
        per_cat = {c: _rates([r for r in records if r["category"] == c], key) for c in cats}
        table["category_mean"] = {m: _mean(per_cat[c][m] for c in cats) for m in _METRICS}
        table["category_weighted"] = {m: _weighted(per_cat, m) for m in _METRICS}
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
        wmean = [pck[k]["category_weighted"][metric] for k in keys]
        rows.append("| *category weighted* | | " + " | ".join(_fmt(v) for v in wmean) + " |")
        every = [pck[k][metric] for k in keys]
        n = pck[keys[0]]["n_pairs"]
        rows.append(f"| **all** | {n} | " + " | ".join(_fmt(v) for v in every) + " |")
    return "\n".join(rows)


def headline_table(by_protocol: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """A markdown table of every protocol's overall row: ``per image / per keypoint`` per α."""
    keys = list(by_protocol)
    alphas = list(next(iter(by_protocol.values()))) if keys else []
    rows = ["| protocol | " + " | ".join(f"PCK@{a}" for a in alphas) + " |",
            "|---|" + "---:|" * len(alphas)]  # fmt: skip
    for k in keys:
        cells = [f"{_fmt(by_protocol[k][a]['per_image'])} / {_fmt(by_protocol[k][a]['per_keypoint'])}"
                 for a in alphas]  # fmt: skip
        rows.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
