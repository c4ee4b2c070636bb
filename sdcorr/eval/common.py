"""Helpers shared by the dataset readers: CSV rows, point lists, image sizes, pair selection."""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError
from .spair import SPairPair, sample_with_replacement


def read_csv(path: Path, help_text: str) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of a CSV pair list.

    Raises:
        DatasetError: the file is missing, unreadable or has no header.
    """
    if not path.is_file():
        raise DatasetError(f"pair list not found: {path} ({help_text})")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"unreadable pair list {path} ({err})") from None
    if not rows:
        raise DatasetError(f"{path}: empty pair list")
    return [c.strip() for c in rows[0]], rows[1:]


def floats(text: str, sep: str | None = None) -> np.ndarray:
    """A 1-D float64 array from ``"1.5;2;3"`` (``sep=";"``) or one number; rejects non-finite."""
    parts = [t for t in (text.split(sep) if sep else [text]) if t.strip()]
    values = np.array([float(t) for t in parts], dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"non-finite coordinate in '{text}'")
    return values


def image_size(path: Path, listed_in: str) -> tuple[int, int]:
    """``(W, H)`` of an image file, read from its header.

    Raises:
        DatasetError: the file is missing or not an image, naming the list that names it.
    """
    if not path.is_file():
        raise DatasetError(f"image file not found: {path} (listed in {listed_in})")
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"not an image: {path} (listed in {listed_in}; {err})") from None


def kps_extent(kps: np.ndarray) -> tuple[float, float, float, float]:
    """``(x1, y1, x2, y2)`` of the points' bounding box (``(0, 0, 0, 0)`` for no points)."""
    if not len(kps):
        return 0.0, 0.0, 0.0, 0.0
    (x1, y1), (x2, y2) = kps.min(axis=0), kps.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


def select_pairs(
    pairs: Sequence[SPairPair],
    categories: Sequence[str] | None = None,
    sample: int | None = None,
    limit: int | None = None,
    seed: int = 42,
    replace: bool = False,
) -> list[SPairPair]:
    """Filter and subsample pairs (the rules of :func:`sdcorr.eval.spair.select_names`).

    Args:
        pairs: all pairs of a split in the dataset's order.
        categories: keep only these (``None``: all); an unknown name is an error.
        sample: pairs per category: without replacement (``random.Random(seed)``, order kept)
            or, with ``replace``, as the reference's ``--SAMPLE`` (repeats named ``name#k``).
        limit: then keep the first ``limit`` pairs.
        seed: seed of the sample.
        replace: sample with replacement.
    """
    for what, n in (("sample", sample), ("limit", limit)):
        if n is not None and n < 1:
            raise DatasetError(f"--{what} must be at least 1 (leave it out for all pairs), got {n}")
    known = list(dict.fromkeys(p.category for p in pairs))
    if categories:
        unknown = sorted(set(categories) - set(known))
        if unknown:
            raise DatasetError(f"unknown categories {unknown} (present: {', '.join(known)})")
        pairs = [p for p in pairs if p.category in set(categories)]
    by_name = {p.name: p for p in pairs}
    if sample is not None and replace:
        names = sample_with_replacement(list(by_name), [p.category for p in pairs], sample, seed)
        pairs = [_renamed(by_name[n.split("#", 1)[0]], n) for n in names]
    elif sample is not None:
        rng = random.Random(seed)
        keep: set[str] = set()
        for cat in known:
            block = [p.name for p in pairs if p.category == cat]
            keep.update(rng.sample(block, min(sample, len(block))))
        pairs = [p for p in pairs if p.name in keep]
    pairs = list(pairs)
    return pairs[:limit] if limit is not None else pairs


def _renamed(pair: SPairPair, name: str) -> SPairPair:
    import dataclasses

    return pair if pair.name == name else dataclasses.replace(pair, name=name)
