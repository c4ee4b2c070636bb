"""Reader for PF-Willow in the layouts of its public pair lists.

Accepted trees (``--root`` is any of the marked folders)::

    data/                                   <- --root
      test_pairs_pf.csv                     (CNNGeometric/NCNet's list; or test_pairs.csv)
      PF-dataset/<class>/<image>.png        e.g. PF-dataset/car(G)/car_0001.png

    data/                                   <- --root
      PF-dataset/                           <- --root
        test_pairs_pf.csv                   (moved in, as NCNet's download script does)
        <class>/<image>.png

The pair list ``test_pairs_pf.csv`` (else ``test_pairs.csv``, the name SD4Match and DHPF use)
is looked for in ``--root``, then in ``--root/PF-dataset/``. Its image paths
(``PF-dataset/<class>/<image>.png``) are relative to the list's folder or its parent, whichever
holds the first listed image. Both lists have a header and 42 columns: ``imageA, imageB``, then
10 x and 10 y coordinates of A's keypoints (``XA1..XA10, YA1..YA10``), then 10 x and 10 y of
B's; row ``i`` of A matches row ``i`` of B. The category is the image's folder, one of the ten
classes of :data:`CLASSES`. A pair's id is the 0-based index of its data row. The threshold is
``α · max(x_max - x_min, y_max - y_min)`` over the **target** keypoints (the literature's
PF-Willow "bbox" threshold, e.g. SD4Match ``get_pckthres``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .common import CsvLists, Split, floats, image_base, image_size, kps_extent
from .pairs import Pair, natural_name

SPLITS: tuple[str, ...] = ("test",)
CLASSES: tuple[str, ...] = (
    "car(G)", "car(M)", "car(S)", "duck(S)", "motorbike(G)", "motorbike(M)", "motorbike(S)",
    "winebottle(M)", "winebottle(wC)", "winebottle(woC)",
)  # fmt: skip
N_KPS = 10
IMAGE_FOLDER = "PF-dataset"
HELP = (
    "PF-Willow: download PF-dataset (https://www.di.ens.fr/willow/research/proposalflow/) and "
    "test_pairs_pf.csv (https://www.di.ens.fr/willow/research/cnngeometric/other_resources/) and "
    "pass the folder that holds PF-dataset/ (the list beside it or inside it) or PF-dataset/ "
    "itself (the list inside it)"
)

LISTS = CsvLists(
    "PF-Willow", SPLITS, lambda split: ("test_pairs_pf.csv", "test_pairs.csv"), IMAGE_FOLDER, HELP
)


def object_name(category: str) -> str:
    """``"car(G)" → "car"``, ``"winebottle(wC)" → "winebottle"``: the object without the
    subset tag."""
    return category.split("(", 1)[0].strip()


def prompt_name(category: str) -> str:
    """``"car(G)" → "car"``, ``"winebottle(wC)" → "wine bottle"``."""
    return natural_name(object_name(category))


def open_split(root: Path, split: str = "test", layout: str = "large") -> Split:
    """All pairs of the list in row order (``layout`` is SPair's; unused here).

    Raises:
        DatasetError: naming the missing file or the malformed row (``file:line``).
    """
    path, header, rows = LISTS.open(root, split)
    if len(header) != 2 + 4 * N_KPS:
        raise DatasetError(f"{path}: header has {len(header)} columns, expected {2 + 4 * N_KPS}")
    parsed = [_row(path, i, row) for i, row in enumerate(rows)]
    base = image_base(path, parsed[0][2]) if parsed else path.parent
    entries = [(str(i), r[0]) for i, r in enumerate(parsed)]
    return Split(entries, lambda name: _pair(base, path, int(name), parsed[int(name)]))


Row = tuple[str, np.ndarray, str, str]


def _row(path: Path, i: int, row: list[str]) -> Row:
    """``(category, (4, 10) XA/YA/XB/YB values, source path, target path)`` of data row i."""
    try:
        if len(row) != 2 + 4 * N_KPS:
            raise ValueError(f"{len(row)} columns, expected {2 + 4 * N_KPS}")
        v = np.concatenate([floats(c) for c in row[2:]]).reshape(4, N_KPS)
        src, trg = row[0].strip(), row[1].strip()
        category = Path(src).parent.name
        if not category:
            raise ValueError(f"image path '{src}' has no class folder")
    except ValueError as err:
        raise DatasetError(f"{path}:{i + 2}: malformed row ({err})") from None
    return category, v, src, trg


def _pair(base: Path, path: Path, i: int, row: Row) -> Pair:
    category, v, src_rel, trg_rel = row
    where = f"{path}:{i + 2}"
    src, trg = base / src_rel, base / trg_rel
    src_kps, trg_kps = np.stack([v[0], v[1]], axis=1), np.stack([v[2], v[3]], axis=1)
    return Pair(
        name=str(i), category=category, src_image=src, trg_image=trg,
        src_kps=src_kps, trg_kps=trg_kps, kps_ids=tuple(str(k) for k in range(N_KPS)),
        src_size=image_size(src, where), trg_size=image_size(trg, where),
        src_bbox=kps_extent(src_kps), trg_bbox=kps_extent(trg_kps),
        prompt_name=prompt_name(category), label=object_name(category),
    )  # fmt: skip
