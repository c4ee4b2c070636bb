"""Reader for PF-Pascal in the layouts of its public pair lists.

Accepted trees (``--root`` is any of the marked folders)::

    data/                                   <- --root (after sd-dino's prepare_pfpascal.sh)
      PF-dataset-PASCAL/                    <- --root (likewise)
        JPEGImages/<VOCid>.jpg
        test_pairs_pf_pascal.csv            (and val_pairs_pf_pascal.csv)

    PF-Pascal/                              <- --root (the lists beside the image folder)
      test_pairs_pf_pascal.csv              (val_pairs_pf_pascal.csv, trn_pairs_pf_pascal.csv
      PF-dataset-PASCAL/JPEGImages/...       or <split>_pairs.csv)

The pair list ``<split>_pairs_pf_pascal.csv`` (else ``<split>_pairs.csv``) is looked for in
``--root``, then in ``--root/PF-dataset-PASCAL/``. Its image paths
(``PF-dataset-PASCAL/JPEGImages/...``) are relative to the list's folder or, as sd-dino reads
them (``{list folder}/../{path}``), to its parent: whichever holds the first listed image.

Each CSV has a header and the columns ``source_image, target_image, class, XA, YA, XB, YB`` (the
training list also has ``flip`` after ``class``; it is ignored). ``class`` is 1-based over the
20 VOC classes of :data:`CLASSES`; ``XA``..``YB`` are ``;``-separated floats (row ``i`` of A
matches row ``i`` of B). Coordinates are used as given (the peers do not shift them). A pair's
id is the 0-based index of its data row, as a string. PF-Pascal has no boxes: the threshold is
``α · max(W, H)`` of the target image (α_img).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .common import CsvLists, Split, floats, image_base, image_size
from .pairs import Pair, natural_name

CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
SPLITS: tuple[str, ...] = ("test", "val", "trn")
COLUMNS: tuple[str, ...] = ("source_image", "target_image", "class", "XA", "YA", "XB", "YB")
IMAGE_FOLDER = "PF-dataset-PASCAL"
HELP = (
    "PF-Pascal: download PF-dataset-PASCAL (https://www.di.ens.fr/willow/research/proposalflow/)"
    " and the pair lists test_pairs_pf_pascal.csv, val_pairs_pf_pascal.csv "
    "(https://www.di.ens.fr/willow/research/cnngeometric/other_resources/), e.g. with sd-dino's "
    "data/prepare_pfpascal.sh, and pass the folder that holds PF-dataset-PASCAL/ (the lists "
    "beside it or inside it) or PF-dataset-PASCAL/ itself (the lists inside it)"
)

LISTS = CsvLists(
    "PF-Pascal",
    SPLITS,
    lambda split: (f"{split}_pairs_pf_pascal.csv", f"{split}_pairs.csv"),
    IMAGE_FOLDER,
    HELP,
)


def open_split(root: Path, split: str = "test", layout: str = "large") -> Split:
    """All pairs of ``split`` in CSV order (``layout`` is SPair's; unused here).

    Raises:
        DatasetError: naming the missing file or the malformed row (``file:line``).
    """
    path, header, rows = LISTS.open(root, split)
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{path}: header lacks columns {missing} (has {header})")
    col = {c: header.index(c) for c in COLUMNS}
    base = image_base(path, rows[0][col["source_image"]].strip()) if rows else path.parent
    parsed = [_row(path, i, row, col) for i, row in enumerate(rows)]
    entries = [(str(i), CLASSES[r[0] - 1]) for i, r in enumerate(parsed)]
    return Split(entries, lambda name: _pair(base, path, int(name), parsed[int(name)]))


Row = tuple[int, np.ndarray, np.ndarray, str, str]


def _row(path: Path, i: int, row: list[str], col: dict[str, int]) -> Row:
    """``(class, (K, 2) A points, (K, 2) B points, source path, target path)`` of data row i."""
    try:
        cls = int(float(row[col["class"]]))
        if not 1 <= cls <= len(CLASSES):
            raise ValueError(f"class {cls} is not in 1..{len(CLASSES)}")
        xa, ya, xb, yb = (floats(row[col[c]], ";") for c in ("XA", "YA", "XB", "YB"))
        if not len(xa) == len(ya) == len(xb) == len(yb):
            raise ValueError(f"{len(xa)}, {len(ya)}, {len(xb)}, {len(yb)} values in XA, YA, XB, YB")
        src, trg = row[col["source_image"]].strip(), row[col["target_image"]].strip()
    except (IndexError, ValueError) as err:
        raise DatasetError(f"{path}:{i + 2}: malformed row ({err})") from None  # header: line 1
    return cls, np.stack([xa, ya], axis=1), np.stack([xb, yb], axis=1), src, trg


def _pair(base: Path, path: Path, i: int, row: Row) -> Pair:
    cls, src_kps, trg_kps, src_rel, trg_rel = row
    where = f"{path}:{i + 2}"
    src, trg = base / src_rel, base / trg_rel
    src_size, trg_size = image_size(src, where), image_size(trg, where)
    category = CLASSES[cls - 1]
    return Pair(
        name=str(i), category=category, src_image=src, trg_image=trg,
        src_kps=src_kps, trg_kps=trg_kps, kps_ids=tuple(str(k) for k in range(len(src_kps))),
        src_size=src_size, trg_size=trg_size,
        src_bbox=(0.0, 0.0, float(src_size[0]), float(src_size[1])),
        trg_bbox=(0.0, 0.0, float(trg_size[0]), float(trg_size[1])),
        prompt_name=natural_name(category), label=category,
    )  # fmt: skip
