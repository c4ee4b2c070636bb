"""Reader for AP-10K as GeoAware-SC's ``prepare_ap10k.ipynb`` prepares it.

Expected tree (``--root`` is the prepared ``ap-10k`` folder)::

    ImageAnnotation/<family>/<species>/<id>.json
    JPEGImages/<family>/<species>/<id>.jpg
    PairAnnotation/<split>/<src id>-<trg id>:<category>.json

``<split>`` is ``test``, ``val`` or ``trn`` (intra-species: ``<category>`` is the species),
``test_cross_species`` / ``val_cross_species`` (``<category>`` is the family) or
``test_cross_family`` / ``val_cross_family`` (``<category>`` is ``all``). Fields read:

* pair file: ``src_json_path`` and ``trg_json_path``, paths of the two image annotations as the
  notebook wrote them (``data/ap-10k/ImageAnnotation/...``); the part from ``ImageAnnotation/``
  on is resolved under ``--root``, and the image is the same path under ``JPEGImages/`` with
  ``.jpg``, as GeoAware-SC's ``load_ap10k_data`` does;
* image annotation: ``width``, ``height``, ``bbox`` ``[x, y, w, h]`` and ``keypoints``, 17
  ``[x, y, v]`` triples flattened (``v > 0``: labelled).

Scored keypoints are those labelled in both images (GeoAware-SC: ``v / 2`` as visibility). The
threshold is ``α · max(w, h)`` of the **target** box. Pairs are read per category in sorted file
order; a pair's id is its file stem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .common import Split, read_json
from .pairs import Pair

N_KPS = 17
HELP = (
    "AP-10K: download AP-10K (https://github.com/AlexTheBad/AP-10K) and run GeoAware-SC's "
    "prepare_ap10k.ipynb (https://github.com/Junyi42/GeoAware-SC); pass the prepared ap-10k "
    "folder, which holds ImageAnnotation/, JPEGImages/ and PairAnnotation/<split>/"
)


def _under_root(root: Path, written: str, pair_file: Path) -> Path:
    parts = Path(str(written)).parts
    if "ImageAnnotation" not in parts:
        raise DatasetError(f"{pair_file}: '{written}' is not under an ImageAnnotation/ folder")
    return root.joinpath(*parts[parts.index("ImageAnnotation") :])


def _image(path: Path, pair_file: Path) -> tuple[np.ndarray, tuple[int, int], tuple]:
    ann = read_json(path, str(pair_file))
    try:
        kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(N_KPS, 3)
        x, y, w, h = (float(v) for v in ann["bbox"])
        size = (int(ann["width"]), int(ann["height"]))
    except KeyError as err:
        raise DatasetError(f"{path}: missing field {err}") from None
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{path}: malformed annotation ({err})") from None
    return kps, size, (x, y, x + w, y + h)


def open_split(root: Path, split: str = "test", layout: str = "large") -> Split:
    """All pairs of ``PairAnnotation/<split>``, by category, then file name (``layout`` is
    SPair's; unused here).

    Raises:
        DatasetError: naming the missing folder or file, or the malformed annotation.
    """
    folder = root / "PairAnnotation" / split
    if not root.is_dir() or not (root / "ImageAnnotation").is_dir():
        raise DatasetError(f"AP-10K not found at {root}: {HELP}")
    if not folder.is_dir():
        have = sorted(p.name for p in (root / "PairAnnotation").glob("*") if p.is_dir())
        raise DatasetError(f"{root} has no PairAnnotation/{split}/ (splits: {have}); {HELP}")
    files = sorted(folder.glob("*.json"), key=lambda p: (p.stem.rpartition(":")[2], p.name))
    if not files:
        raise DatasetError(f"no pair files in {folder}")
    for f in files:
        if not f.stem.rpartition(":")[2]:
            raise DatasetError(f"{f}: file name lacks ':<category>'")
    entries = [(f.stem, f.stem.rpartition(":")[2]) for f in files]
    return Split(entries, lambda name: _pair(root, folder / f"{name}.json", split))


def _pair(root: Path, pair_file: Path, split: str) -> Pair:
    category = pair_file.stem.rpartition(":")[2]
    ann = read_json(pair_file)
    try:
        src_json, trg_json = (_under_root(root, ann[k], pair_file) for k in
                              ("src_json_path", "trg_json_path"))  # fmt: skip
    except KeyError as err:
        raise DatasetError(f"{pair_file}: missing field {err}") from None
    (src_all, src_size, src_box), (trg_all, trg_size, trg_box) = (
        _image(src_json, pair_file),
        _image(trg_json, pair_file),
    )
    both = (src_all[:, 2] > 0) & (trg_all[:, 2] > 0)
    images = []
    for js in (src_json, trg_json):
        img = root.joinpath("JPEGImages", *js.relative_to(root / "ImageAnnotation").parts)
        img = img.with_suffix(".jpg")
        if not img.is_file():
            raise DatasetError(f"image file not found: {img} (listed in {pair_file})")
        images.append(img)
    intra = "_cross_" not in split
    return Pair(
        name=pair_file.stem, category=category, src_image=images[0], trg_image=images[1],
        src_kps=src_all[both, :2], trg_kps=trg_all[both, :2],
        kps_ids=tuple(str(k) for k in np.flatnonzero(both)), src_size=src_size,
        trg_size=trg_size, src_bbox=src_box, trg_bbox=trg_box,
        prompt_name=category if intra else None, label=category if intra else None,
    )  # fmt: skip
