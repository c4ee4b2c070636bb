"""Reader for PF-Willow (the ``test_pairs.csv`` list of its public release).

Expected tree (``--root``)::

    test_pairs.csv
    PF-dataset/<class>/<image>.png          e.g. PF-dataset/car(G)/car_0001.png

``test_pairs.csv`` has a header and 42 columns: ``imageA, imageB`` (paths relative to
``--root``), then 10 x and 10 y coordinates of A's keypoints (``XA1..XA10, YA1..YA10``), then
10 x and 10 y of B's (``XB1..``, ``YB1..``); row ``i`` of A matches row ``i`` of B. The category
is the image's folder (``car(G)``, ``duck(S)``, ...). A pair's id is the 0-based index of its data
row. The threshold is ``α · max(x_max - x_min, y_max - y_min)`` over the **target** keypoints
(the literature's PF-Willow "bbox" threshold, e.g. SD4Match ``get_pckthres``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .common import floats, image_size, kps_extent, read_csv
from .spair import SPairPair, natural_name

SPLITS: tuple[str, ...] = ("test",)
N_KPS = 10
HELP = (
    "PF-Willow: download PF-dataset (https://www.di.ens.fr/willow/research/proposalflow/) and "
    "test_pairs.csv (https://www.di.ens.fr/willow/research/cnngeometric/other_resources/) "
    "into one folder"
)


def prompt_name(category: str) -> str:
    """``"car(G)" → "car"``, ``"winebottle(wC)" → "wine bottle"``."""
    return natural_name(category.split("(", 1)[0].strip())


def load_pf_willow(root: str | Path, split: str = "test") -> list[SPairPair]:
    """All pairs of ``test_pairs.csv`` in row order.

    Raises:
        DatasetError: naming the missing file or the malformed row (``file:line``).
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown PF-Willow split '{split}' (valid: {', '.join(SPLITS)})")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"PF-Willow not found at {root}: {HELP}")
    path = root / f"{split}_pairs.csv"
    header, rows = read_csv(path, HELP)
    if len(header) != 2 + 4 * N_KPS:
        raise DatasetError(f"{path}: header has {len(header)} columns, expected {2 + 4 * N_KPS}")
    return [_pair(root, path, i, row) for i, row in enumerate(rows)]


def _pair(root: Path, path: Path, i: int, row: list[str]) -> SPairPair:
    where = f"{path}:{i + 2}"
    try:
        if len(row) != 2 + 4 * N_KPS:
            raise ValueError(f"{len(row)} columns, expected {2 + 4 * N_KPS}")
        v = np.concatenate([floats(c) for c in row[2:]]).reshape(4, N_KPS)
        src_rel, trg_rel = row[0].strip(), row[1].strip()
        category = Path(src_rel).parent.name
        if not category:
            raise ValueError(f"image path '{src_rel}' has no class folder")
    except ValueError as err:
        raise DatasetError(f"{where}: malformed row ({err})") from None
    src, trg = root / src_rel, root / trg_rel
    src_kps, trg_kps = np.stack([v[0], v[1]], axis=1), np.stack([v[2], v[3]], axis=1)
    return SPairPair(
        name=str(i), category=category, src_image=src, trg_image=trg,
        src_kps=src_kps, trg_kps=trg_kps, kps_ids=tuple(str(k) for k in range(N_KPS)),
        src_size=image_size(src, where), trg_size=image_size(trg, where),
        src_bbox=kps_extent(src_kps), trg_bbox=kps_extent(trg_kps),
        prompt_name=prompt_name(category),
    )  # fmt: skip
