"""Pieces every dataset reader shares: the split a reader opens, JSON and CSV files, point
lists, image sizes, where a CSV pair list and its images lie, and pair selection."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError
from .pairs import Pair, base_name, renamed


@dataclass(frozen=True)
class Selection:
    """Which pairs of a dataset to evaluate (see :func:`select_names`).

    Attributes:
        split: the pair list (``test``, ``val``, ...; TSS: ``test`` or one subset).
        layout: SPair's pair list variant (``large`` or ``small``); the other datasets have
            one list per split.
        categories: only these categories (``None``: all).
        sample: pairs per category (``None``: all).
        limit: then only the first ``limit`` pairs.
        seed: seed of ``sample``.
        replace: draw ``sample`` with replacement, as the reference's ``--SAMPLE``.
    """

    split: str = "test"
    layout: str = "large"
    categories: tuple[str, ...] | None = None
    sample: int | None = None
    limit: int | None = None
    seed: int = 42
    replace: bool = False


@dataclass(frozen=True)
class Split:
    """What a reader found in one split, before any pair is read.

    Attributes:
        entries: ``(pair id, category)`` of every pair, in the dataset's order.
        read: ``read(pair id) -> Pair`` reads and checks one pair (its files must exist).
    """

    entries: list[tuple[str, str]]
    read: Callable[[str], Pair]


def read_json(path: Path, listed_in: str | None = None) -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises:
        DatasetError: missing file (naming the file that lists it, if given), unreadable JSON
            or not an object.
    """
    if not path.is_file():
        where = f" (listed in {listed_in})" if listed_in else ""
        raise DatasetError(f"annotation file not found: {path}{where}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"unreadable JSON in {path} ({err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of a CSV pair list.

    Raises:
        DatasetError: the file is unreadable or empty.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"unreadable pair list {path} ({err})") from None
    if not rows:
        raise DatasetError(f"{path}: empty pair list")
    return [c.strip() for c in rows[0]], rows[1:]


@dataclass(frozen=True)
class CsvLists:
    """Where a dataset of CSV pair lists keeps them (PF-Pascal, PF-Willow).

    Attributes:
        title: the dataset's printed name.
        splits: the valid splits.
        names: ``names(split)`` -> the accepted list names, preferred first.
        folder: the image folder the peers' download scripts move the lists into.
        help_text: where to get the dataset and which folders ``--root`` may name.
    """

    title: str
    splits: tuple[str, ...]
    names: Callable[[str], tuple[str, ...]]
    folder: str
    help_text: str

    def open(self, root: Path, split: str) -> tuple[Path, list[str], list[list[str]]]:
        """``(list path, header, rows)`` of ``split``'s list: the first of its names found in
        ``root``, then in ``root/folder`` (e.g. after sd-dino's ``prepare_pfpascal.sh``).

        Raises:
            DatasetError: unknown split, no such folder, no list (naming every place looked
                at), or an unreadable list.
        """
        if split not in self.splits:
            valid = ", ".join(self.splits)
            raise DatasetError(f"unknown {self.title} split '{split}' (valid: {valid})")
        if not root.is_dir():
            raise DatasetError(f"{self.title} not found at {root}: {self.help_text}")
        tried = [d / n for d in (root, root / self.folder) for n in self.names(split)]
        for path in tried:
            if path.is_file():
                return (path, *read_csv(path))
        others = ", ".join(str(p) for p in tried[1:])
        raise DatasetError(f"pair list not found: {tried[0]} (nor {others}); {self.help_text}")


def image_base(pair_list: Path, first_image: str) -> Path:
    """The folder a pair list's image paths are relative to: the list's own folder, or its
    parent (sd-dino resolves ``{list folder}/../{image path}``), whichever holds the first
    listed image.

    Raises:
        DatasetError: the image is in neither, naming both places.
    """
    for base in (pair_list.parent, pair_list.parent.parent):
        if (base / first_image).is_file():
            return base
    tried = [str(b / first_image) for b in (pair_list.parent, pair_list.parent.parent)]
    raise DatasetError(
        f"image file not found: {tried[0]} or {tried[1]} (listed in {pair_list}; image paths "
        "are read relative to the list's folder or its parent)"
    )


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


def select_names(
    entries: Sequence[tuple[str, str]],
    categories: Sequence[str] | None = None,
    sample: int | None = None,
    limit: int | None = None,
    seed: int = 42,
    replace: bool = False,
) -> list[str]:
    """Filter and subsample pair ids, keeping the dataset's order.

    Args:
        entries: ``(pair id, category)`` in the dataset's order.
        categories: keep only these (``None``: all); a name absent from ``entries`` is an
            error that lists the present ones.
        sample: keep ``sample`` pairs per category (all of a smaller category), drawn without
            replacement with one ``random.Random(seed)`` over the categories in order of
            first appearance.
        limit: then keep the first ``limit`` pairs.
        seed: seed of the sample.
        replace: draw with replacement exactly as the reference's ``--SAMPLE`` (sd-dino's
            ``load_spair_data``): per category, ``np.random.RandomState(seed).choice(n,
            sample)`` indexes the category's sorted ids; a repeated id gets the suffix ``#2``,
            ``#3``, ... and counts again.
    """
    for what, n in (("sample", sample), ("limit", limit)):
        if n is not None and n < 1:
            raise DatasetError(f"--{what} must be at least 1 (leave it out for all pairs), got {n}")
    if replace and sample is None:
        raise DatasetError("--sample-with-replacement needs --sample N")
    blocks: dict[str, list[str]] = {}
    for name, cat in entries:
        blocks.setdefault(cat, []).append(name)
    if categories:
        unknown = sorted(set(categories) - set(blocks))
        if unknown:
            raise DatasetError(f"unknown categories {unknown} (present: {', '.join(blocks)})")
        blocks = {c: b for c, b in blocks.items() if c in set(categories)}
    order = [n for n, c in entries if c in blocks]
    if sample is not None and replace:
        order = [n for b in blocks.values() for n in _draw_with_replacement(b, sample, seed)]
    elif sample is not None:
        rng = random.Random(seed)
        keep = {n for b in blocks.values() for n in rng.sample(b, min(sample, len(b)))}
        order = [n for n in order if n in keep]
    return order[:limit] if limit is not None else order


def read_selected(split: Split, sel: Selection, where: Path) -> list[Pair]:
    """Read the pairs ``sel`` selects from ``split`` (a repeated draw ``name#k`` is read once
    per draw and keeps its name).

    Raises:
        DatasetError: the selection is invalid or empty, or a selected pair's files are
            missing or malformed.
    """
    names = select_names(split.entries, sel.categories, sel.sample, sel.limit, sel.seed,
                         sel.replace)  # fmt: skip
    if not names:
        raise DatasetError(f"no {sel.split} pairs selected under {where}")
    return [renamed(split.read(base_name(n)), n) for n in names]


def _draw_with_replacement(block: list[str], sample: int, seed: int) -> list[str]:
    names = sorted(block)
    seen: dict[str, int] = {}
    out = []
    for i in np.random.RandomState(seed).choice(len(names), sample):
        name = names[int(i)]
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out
