"""Reader for SPair-71k in its official layout.

Expected tree (the tarball from https://cvlab.postech.ac.kr/research/SPair-71k/)::

    SPair-71k/
      JPEGImages/<category>/<VOCid>.jpg
      ImageAnnotation/<category>/<VOCid>.json
      PairAnnotation/{trn,val,test}/<id:06d>-<src>-<trg>:<category>.json
      Layout/{large,small}/{trn,val,test}.txt     one pair name per line

A pair file lists only the keypoints visible in both images: ``src_kps``/``trg_kps`` are integer
``[x, y]`` pixels of the original images (row ``i`` of one matches row ``i`` of the other),
bounding boxes are ``[x1, y1, x2, y2]`` and ``*_imsize`` is ``[W, H, C]``. Pairs are read in the
order of ``Layout/<layout>/<split>.txt`` (category blocks, then source image, then target image);
without a Layout file, the sorted file names of ``PairAnnotation/<split>`` are used.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .common import Selection, Split, read_json, read_selected
from .pairs import Pair, natural_name

log = logging.getLogger("sdcorr")

CATEGORIES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "train", "tvmonitor",
)  # fmt: skip
SPLITS: tuple[str, ...] = ("trn", "val", "test")
DOWNLOAD_URL = "https://cvlab.postech.ac.kr/research/SPair-71k/data/SPair-71k.tar.gz"
_LAYOUT_HELP = (
    f"download and unpack SPair-71k ({DOWNLOAD_URL}) and pass the unpacked 'SPair-71k' "
    "folder, which holds JPEGImages/, ImageAnnotation/, PairAnnotation/{trn,val,test}/ and "
    "Layout/{large,small}/"
)
_PAIR_FIELDS = ("src_imname", "trg_imname", "src_imsize", "trg_imsize", "src_kps", "trg_kps")
SPairPair = Pair  # the record's former name


def check_root(root: str | Path, split: str = "test") -> Path:
    """Check that ``root`` looks like an SPair-71k folder with ``split`` present.

    Raises:
        DatasetError: naming what is missing and where to get the dataset.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown SPair split '{split}' (valid: {', '.join(SPLITS)})")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"SPair-71k not found at {root}: {_LAYOUT_HELP}")
    for sub in ("JPEGImages", "PairAnnotation", f"PairAnnotation/{split}"):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root} has no {sub}/ folder: {_LAYOUT_HELP}")
    return root


def pair_category(name: str) -> str:
    """The category of a pair name (the part after ``:``)."""
    _, sep, cat = name.rpartition(":")
    if not sep or cat not in CATEGORIES:
        raise DatasetError(f"not an SPair pair name: '{name}'")
    return cat


def list_pair_names(root: Path, split: str = "test", layout: str = "large") -> list[str]:
    """Pair names of ``split`` in official order (``Layout/<layout>/<split>.txt``)."""
    txt = root / "Layout" / layout / f"{split}.txt"
    if txt.is_file():
        names = [ln.strip() for ln in txt.read_text().splitlines() if ln.strip()]
    elif layout == "large":
        log.debug("no %s; listing PairAnnotation/%s instead", txt, split)
        names = sorted(p.stem for p in (root / "PairAnnotation" / split).glob("*.json"))
    else:
        raise DatasetError(f"layout file not found: {txt}")
    if not names:
        raise DatasetError(f"no pairs listed for split '{split}' under {root}")
    return names


def load_pair(root: Path, split: str, name: str) -> Pair:
    """Read and check one pair file; its images must exist.

    Raises:
        DatasetError: naming the file that is missing or malformed.
    """
    path = root / "PairAnnotation" / split / f"{name}.json"
    ann = read_json(path)
    try:
        missing = [k for k in (*_PAIR_FIELDS, "trg_bndbox", "src_bndbox") if k not in ann]
        if missing:
            raise KeyError(missing[0])
        category = str(ann["category"])
        src_kps, trg_kps = _points(ann["src_kps"]), _points(ann["trg_kps"])
        kps_ids = tuple(str(k) for k in ann.get("kps_ids", range(len(src_kps))))
        sizes = [(int(ann[k][0]), int(ann[k][1])) for k in ("src_imsize", "trg_imsize")]
        boxes = [_bbox(ann[k]) for k in ("src_bndbox", "trg_bndbox")]
    except KeyError as err:
        raise DatasetError(f"{path}: missing field {err}") from None
    except (TypeError, ValueError, IndexError) as err:
        raise DatasetError(f"{path}: malformed annotation ({err})") from None
    if len(src_kps) != len(trg_kps) or len(kps_ids) != len(src_kps):
        raise DatasetError(
            f"{path}: {len(src_kps)} src_kps, {len(trg_kps)} trg_kps, {len(kps_ids)} kps_ids"
        )
    if category not in CATEGORIES:
        raise DatasetError(f"{path}: unknown category '{category}'")
    images = root / "JPEGImages" / category
    src_image, trg_image = images / str(ann["src_imname"]), images / str(ann["trg_imname"])
    for img in (src_image, trg_image):
        if not img.is_file():
            raise DatasetError(f"image file not found: {img} (listed in {path})")
    poses = [str(ann[k]) if k in ann else None for k in ("src_pose", "trg_pose")]
    return Pair(
        name, category, src_image, trg_image, src_kps, trg_kps, kps_ids, sizes[0], sizes[1],
        boxes[0], boxes[1], natural_name(category), category, poses[0], poses[1],
    )  # fmt: skip


def open_split(root: Path, split: str = "test", layout: str = "large") -> Split:
    """The pairs of one split in official order (``Layout/<layout>/<split>.txt``).

    Raises:
        DatasetError: the tree is incomplete or the pair list is missing or empty.
    """
    root = check_root(root, split)
    names = list_pair_names(root, split, layout)
    return Split([(n, pair_category(n)) for n in names], lambda n: load_pair(root, split, n))


def load_spair(
    root: str | Path,
    split: str = "test",
    categories: list[str] | None = None,
    sample: int | None = None,
    limit: int | None = None,
    seed: int = 42,
    layout: str = "large",
    replace: bool = False,
) -> list[Pair]:
    """Read the selected pairs of one split (selection: :func:`sdcorr.eval.common.select_names`).

    Returns:
        The selected pairs in official order.

    Raises:
        DatasetError: the tree is incomplete, a file is missing or malformed, or nothing is
            selected.
    """
    cats = tuple(categories) if categories else None
    sel = Selection(split, layout, cats, sample, limit, seed, replace)
    pairs = read_selected(open_split(Path(root).expanduser(), split, layout), sel, Path(root))
    log.info("SPair-71k %s: %d pairs, %d categories", split, len(pairs),
             len({p.category for p in pairs}))  # fmt: skip
    return pairs


def _points(value: list) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64).reshape(-1, 2) if len(value) else np.zeros((0, 2))
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] != len(value):
        raise ValueError("keypoints must be a list of [x, y]")
    return a


def _bbox(value: list) -> tuple[float, float, float, float]:
    if len(value) != 4:
        raise ValueError(f"bounding box must be [x1, y1, x2, y2], got {value}")
    x1, y1, x2, y2 = (float(v) for v in value)
    return x1, y1, x2, y2
