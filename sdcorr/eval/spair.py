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

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError

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


# Natural-language names for the SD prompt "a photo of a {name}" (the files use joined words).
NATURAL_NAMES: dict[str, str] = {
    "pottedplant": "potted plant",
    "tvmonitor": "tv monitor",
    "diningtable": "dining table",
    "motorbike": "motorbike",
    "winebottle": "wine bottle",
}


def natural_name(category: str) -> str:
    """``"pottedplant" → "potted plant"``; other names unchanged (the SD prompt's wording)."""
    return NATURAL_NAMES.get(category, category)


@dataclass(frozen=True)
class SPairPair:
    """One annotated image pair (the record every dataset reader yields, not only SPair's).

    Attributes:
        name: pair file stem, e.g. ``"000167-2008_007604-2009_001056:aeroplane"``.
        category: one of :data:`CATEGORIES`.
        src_image: path of the source JPEG.
        trg_image: path of the target JPEG.
        src_kps: ``(K, 2)`` float64 ``(x, y)`` source keypoints, original pixels.
        trg_kps: ``(K, 2)`` float64 ``(x, y)`` target keypoints (row ``i`` ↔ ``src_kps[i]``).
        kps_ids: ``K`` semantic keypoint ids (strings, as in the files).
        src_size: ``(W, H)`` of the source image.
        trg_size: ``(W, H)`` of the target image.
        src_bbox: ``(x1, y1, x2, y2)`` of the source object.
        trg_bbox: ``(x1, y1, x2, y2)`` of the target object.
        prompt_name: the object's name for the SD prompt ``"a photo of a {name}"`` with
            ``--prompt category`` (``None``: empty prompt); readers set the natural name.
    """

    name: str
    category: str
    src_image: Path
    trg_image: Path
    src_kps: np.ndarray
    trg_kps: np.ndarray
    kps_ids: tuple[str, ...]
    src_size: tuple[int, int]
    trg_size: tuple[int, int]
    src_bbox: tuple[float, float, float, float]
    trg_bbox: tuple[float, float, float, float]
    prompt_name: str | None = None

    @property
    def num_kps(self) -> int:
        """Number of keypoints scored for this pair."""
        return len(self.src_kps)


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


def select_names(
    names: list[str],
    categories: list[str] | None = None,
    sample: int | None = None,
    limit: int | None = None,
    seed: int = 42,
    replace: bool = False,
) -> list[str]:
    """Filter and subsample pair names, keeping their order.

    Args:
        names: pair names in official order.
        categories: keep only these categories (``None``: all).
        sample: keep ``sample`` pairs per category, drawn without replacement with
            ``random.Random(seed)`` (all pairs of a category if it has fewer).
        limit: then keep the first ``limit`` pairs.
        seed: seed of the per-category sample.
        replace: draw with replacement exactly as the reference's ``--SAMPLE`` does
            (``np.random.RandomState(seed).choice(n, sample)`` per category over its sorted
            names); a name drawn again gets the suffix ``#2``, ``#3``, ... and counts again.
    """
    for what, n in (("sample", sample), ("limit", limit)):
        if n is not None and n < 1:
            raise DatasetError(f"--{what} must be at least 1 (leave it out for all pairs), got {n}")
    if categories:
        unknown = sorted(set(categories) - set(CATEGORIES))
        if unknown:
            raise DatasetError(f"unknown categories {unknown} (valid: {', '.join(CATEGORIES)})")
        wanted = set(categories)
        names = [n for n in names if pair_category(n) in wanted]
    if sample is not None and replace:
        names = sample_with_replacement(names, [pair_category(n) for n in names], sample, seed)
    elif sample is not None:
        rng = random.Random(seed)
        keep: set[str] = set()
        for cat in CATEGORIES:
            block = [n for n in names if pair_category(n) == cat]
            keep.update(rng.sample(block, min(sample, len(block))))
        names = [n for n in names if n in keep]
    if limit is not None:
        names = names[:limit]
    return names


def sample_with_replacement(
    names: list[str], categories: list[str], sample: int, seed: int = 42
) -> list[str]:
    """``sample`` names per category drawn with replacement, as the reference's ``--SAMPLE``.

    Per category (in order of first appearance), ``np.random.RandomState(seed)`` is re-seeded
    and ``choice(len(block), sample)`` indexes the category's sorted names (sd-dino's
    ``load_spair_data`` seeds ``np.random.seed(42)`` per category, then globs sorted files).
    Repeats get ``#k`` suffixes so every drawn pair has its own record.
    """
    blocks: dict[str, list[str]] = {}
    for n, c in zip(names, categories, strict=True):
        blocks.setdefault(c, []).append(n)
    out: list[str] = []
    for block in blocks.values():
        block = sorted(block)
        seen: dict[str, int] = {}
        for i in np.random.RandomState(seed).choice(len(block), sample):
            name = block[int(i)]
            seen[name] = seen.get(name, 0) + 1
            out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def base_name(name: str) -> str:
    """A pair name without the ``#k`` suffix of a repeated draw."""
    return name.split("#", 1)[0]


def load_pair(root: Path, split: str, name: str) -> SPairPair:
    """Read and check one pair file; its images must exist.

    Raises:
        DatasetError: naming the file that is missing or malformed.
    """
    path = root / "PairAnnotation" / split / f"{base_name(name)}.json"
    ann = _read_json(path)
    try:
        category = str(ann["category"])
        missing = [k for k in (*_PAIR_FIELDS, "trg_bndbox", "src_bndbox") if k not in ann]
        if missing:
            raise KeyError(missing[0])
        src_kps = _points(ann["src_kps"])
        trg_kps = _points(ann["trg_kps"])
        kps_ids = tuple(str(k) for k in ann.get("kps_ids", range(len(src_kps))))
        src_size = (int(ann["src_imsize"][0]), int(ann["src_imsize"][1]))
        trg_size = (int(ann["trg_imsize"][0]), int(ann["trg_imsize"][1]))
        src_bbox = _bbox(ann["src_bndbox"])
        trg_bbox = _bbox(ann["trg_bndbox"])
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
    return SPairPair(
        name, category, src_image, trg_image, src_kps, trg_kps, kps_ids,
        src_size, trg_size, src_bbox, trg_bbox, natural_name(category),
    )  # fmt: skip


def load_spair(
    root: str | Path,
    split: str = "test",
    categories: list[str] | None = None,
    sample: int | None = None,
    limit: int | None = None,
    seed: int = 42,
    layout: str = "large",
    replace: bool = False,
) -> list[SPairPair]:
    """Read the pairs of one split (see :func:`select_names` for the selection arguments).

    Returns:
        The selected pairs in official order.

    Raises:
        DatasetError: the tree is incomplete, a file is missing or malformed, or nothing is
            selected.
    """
    root = check_root(root, split)
    all_names = list_pair_names(root, split, layout)
    names = select_names(all_names, categories, sample, limit, seed, replace)
    if not names:
        raise DatasetError(f"no {split} pairs selected under {root} (categories={categories})")
    pairs = [load_pair(root, split, n) for n in names]
    log.info("SPair-71k %s: %d pairs, %d categories", split, len(pairs), len(_cats(pairs)))
    return pairs


def _cats(pairs: list[SPairPair]) -> set[str]:
    return {p.category for p in pairs}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"unreadable JSON in {path} ({err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


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
