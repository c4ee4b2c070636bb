"""Reader for PF-Pascal in the layout of its public pair lists.

Expected tree (``--root``)::

    test_pairs_pf_pascal.csv          (and val_pairs_pf_pascal.csv, trn_pairs_pf_pascal.csv)
    PF-dataset-PASCAL/JPEGImages/<VOCid>.jpg

Each CSV has a header and the columns ``source_image, target_image, class, XA, YA, XB, YB`` (the
training list also has ``flip`` after ``class``; it is ignored). ``class`` is 1-based over the
20 VOC classes of :data:`CLASSES`; ``XA``..``YB`` are ``;``-separated floats (row ``i`` of A
matches row ``i`` of B); image paths are relative to ``--root``. Coordinates are used as given
(the peers do not shift them). A pair's id is the 0-based index of its data row, as a string.
PF-Pascal has no boxes: the threshold is ``α · max(W, H)`` of the target image (α_img).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .common import floats, image_size, read_csv
from .spair import SPairPair, natural_name

CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
SPLITS: tuple[str, ...] = ("test", "val", "trn")
COLUMNS: tuple[str, ...] = ("source_image", "target_image", "class", "XA", "YA", "XB", "YB")
HELP = (
    "PF-Pascal: download the pair lists test_pairs_pf_pascal.csv, val_pairs_pf_pascal.csv and "
    "the PF-dataset-PASCAL images (https://www.di.ens.fr/willow/research/proposalflow/ and "
    "https://www.di.ens.fr/willow/research/cnngeometric/other_resources/) into one folder"
)


def pair_list(root: Path, split: str) -> Path:
    """The CSV of ``split`` (``<split>_pairs_pf_pascal.csv``, else ``<split>_pairs.csv``)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown PF-Pascal split '{split}' (valid: {', '.join(SPLITS)})")
    if not root.is_dir():
        raise DatasetError(f"PF-Pascal not found at {root}: {HELP}")
    for name in (f"{split}_pairs_pf_pascal.csv", f"{split}_pairs.csv"):
        if (root / name).is_file():
            return root / name
    return root / f"{split}_pairs_pf_pascal.csv"


def load_pf_pascal(root: str | Path, split: str = "test") -> list[SPairPair]:
    """All pairs of ``split`` in CSV order.

    Raises:
        DatasetError: naming the missing file or the malformed row (``file:line``).
    """
    root = Path(root).expanduser()
    path = pair_list(root, split)
    header, rows = read_csv(path, HELP)
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{path}: header lacks columns {missing} (has {header})")
    col = {c: header.index(c) for c in COLUMNS}
    return [_pair(root, path, i, row, col) for i, row in enumerate(rows)]


def _pair(root: Path, path: Path, i: int, row: list[str], col: dict[str, int]) -> SPairPair:
    where = f"{path}:{i + 2}"  # line number: header is line 1
    try:
        cls = int(float(row[col["class"]]))
        if not 1 <= cls <= len(CLASSES):
            raise ValueError(f"class {cls} is not in 1..{len(CLASSES)}")
        xa, ya, xb, yb = (floats(row[col[c]], ";") for c in ("XA", "YA", "XB", "YB"))
        if not len(xa) == len(ya) == len(xb) == len(yb):
            raise ValueError(f"{len(xa)}, {len(ya)}, {len(xb)}, {len(yb)} values in XA, YA, XB, YB")
        src_rel, trg_rel = row[col["source_image"]].strip(), row[col["target_image"]].strip()
    except (IndexError, ValueError) as err:
        raise DatasetError(f"{where}: malformed row ({err})") from None
    src, trg = root / src_rel, root / trg_rel
    src_size, trg_size = image_size(src, where), image_size(trg, where)
    category = CLASSES[cls - 1]
    w, h = trg_size
    return SPairPair(
        name=str(i), category=category, src_image=src, trg_image=trg,
        src_kps=np.stack([xa, ya], axis=1), trg_kps=np.stack([xb, yb], axis=1),
        kps_ids=tuple(str(k) for k in range(len(xa))), src_size=src_size, trg_size=trg_size,
        src_bbox=(0.0, 0.0, float(src_size[0]), float(src_size[1])),
        trg_bbox=(0.0, 0.0, float(w), float(h)), prompt_name=natural_name(category),
    )  # fmt: skip
