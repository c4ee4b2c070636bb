"""Reader for TSS (Taniai et al., CVPR 2016), sd-dino's dense flow benchmark.

Expected tree (``--root`` is ``TSS_CVPR2016``)::

    FG3DCar/<pair folder>/ JODS/<pair folder>/ PASCAL/<pair folder>/
        image1.png image2.png flow1.flo flow2.flo mask1.png mask2.png

Each folder gives two pairs, as sd-dino's ``utils/utils_tss.py`` builds them: source
``image1`` → target ``image2`` with ``flow2.flo``/``mask2.png``, then the reverse with
``flow1.flo``/``mask1.png``. ``flowN.flo`` (Middlebury format) holds, for every pixel ``p`` of the
target image, the displacement to its match in the source (``p + flow(p)``); ``maskN.png`` marks
the target's foreground (value 255; the reference reads it with ``cv2.imread(..., 0) / 255``
cast to ``uint8``, so only 255 counts).

The metric is sd-dino's ``pck_tss.py``: over the target's foreground pixels, the end-point
error between the predicted and the true source position, correct when ``<= α · max(H, W)`` of
the **source** image. So each TSS pair becomes a keypoint record *from the target to the
source*: ``src_image`` is the TSS target, ``src_kps`` its foreground pixels in row-major order
``(x, y)``, ``trg_image`` the TSS source and ``trg_kps = src_kps + flow``. Per-image PCK is the
reference's ``PCK_*_per_image``; the table's categories are the three subsets. Pair ids are
``<subset>/<folder>/<source>-<target>`` (e.g. ``JODS/horse_1/image1-image2``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .common import image_size
from .spair import SPairPair

SUBSETS: tuple[str, ...] = ("FG3DCar", "JODS", "PASCAL")
SPLITS: tuple[str, ...] = ("test", *SUBSETS)
FLO_MAGIC = 202021.25
_CLASS_NAMES = {"busd": "bus", "bike": "bicycle", "plane": "aeroplane", "suv": "car"}
HELP = (
    "TSS: download TSS_CVPR2016 (https://taniai.space/projects/cvpr16_dccs/; sd-dino's "
    "data/prepare_tss.sh) and pass the folder that holds FG3DCar/, JODS/ and PASCAL/"
)


def object_class(subset: str, folder: str) -> str:
    """The object class of a pair folder, by the reference's rule (FG3DCar: car)."""
    if subset == "FG3DCar":
        return "car"
    name = folder.split("_")[0].lower()
    return _CLASS_NAMES.get(name, name)


def read_flo(path: Path) -> np.ndarray:
    """``(H, W, 2)`` float32 flow of a Middlebury ``.flo`` file.

    Raises:
        DatasetError: missing file, wrong magic number or truncated data.
    """
    if not path.is_file():
        raise DatasetError(f"flow file not found: {path}")
    raw = path.read_bytes()
    if len(raw) < 12 or np.frombuffer(raw[:4], "<f4")[0] != FLO_MAGIC:
        raise DatasetError(f"{path}: not a .flo file (magic number is not {FLO_MAGIC})")
    w, h = (int(v) for v in np.frombuffer(raw[4:12], "<i4"))
    data = np.frombuffer(raw[12:], "<f4")
    if w <= 0 or h <= 0 or data.size != 2 * w * h:
        raise DatasetError(f"{path}: {data.size} values for a {w}x{h} flow field (truncated?)")
    return data.reshape(h, w, 2)


def write_flo(path: Path, flow: np.ndarray) -> None:
    """Write ``(H, W, 2)`` flow as a Middlebury ``.flo`` file (for fixtures and tools)."""
    h, w = flow.shape[:2]
    with open(path, "wb") as f:
        f.write(np.array([FLO_MAGIC], "<f4").tobytes() + np.array([w, h], "<i4").tobytes())
        f.write(np.ascontiguousarray(flow, dtype="<f4").tobytes())


def load_tss(root: str | Path, split: str = "test") -> list[SPairPair]:
    """The pairs of all subsets (``split="test"``) or of one subset, in the reference's order.

    Raises:
        DatasetError: naming the missing folder or file, or the inconsistent one.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown TSS split '{split}' (valid: {', '.join(SPLITS)})")
    root = Path(root).expanduser()
    subsets = SUBSETS if split == "test" else (split,)
    for s in subsets:
        if not (root / s).is_dir():
            raise DatasetError(f"{root} has no {s}/ folder: {HELP}")
    pairs = []
    for s in subsets:
        for folder in sorted(p for p in (root / s).iterdir() if p.is_dir()):
            pairs += [_pair(root, s, folder, 1, 2), _pair(root, s, folder, 2, 1)]
    if not pairs:
        raise DatasetError(f"no TSS pair folders under {root}")
    return pairs


def _pair(root: Path, subset: str, folder: Path, src: int, trg: int) -> SPairPair:
    src_img, trg_img = folder / f"image{src}.png", folder / f"image{trg}.png"
    flow = read_flo(folder / f"flow{trg}.flo")
    mask_path = folder / f"mask{trg}.png"
    if not mask_path.is_file():
        raise DatasetError(f"mask file not found: {mask_path}")
    with Image.open(mask_path) as im:
        mask = np.asarray(im.convert("L")) == 255
    src_size, trg_size = image_size(src_img, str(folder)), image_size(trg_img, str(folder))
    if mask.shape != flow.shape[:2] or mask.shape != (trg_size[1], trg_size[0]):
        raise DatasetError(
            f"{folder}: flow{trg}.flo is {flow.shape[1]}x{flow.shape[0]}, mask{trg}.png "
            f"{mask.shape[1]}x{mask.shape[0]}, image{trg}.png {trg_size[0]}x{trg_size[1]}"
        )
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    true = pts + flow[ys, xs].astype(np.float64)
    w, h = src_size
    return SPairPair(
        name=f"{subset}/{folder.name}/image{src}-image{trg}", category=subset,
        src_image=trg_img, trg_image=src_img, src_kps=pts, trg_kps=true,
        kps_ids=(), src_size=trg_size, trg_size=src_size,
        src_bbox=(0.0, 0.0, float(trg_size[0]), float(trg_size[1])),
        trg_bbox=(0.0, 0.0, float(w), float(h)),
        prompt_name=object_class(subset, folder.name),
    )  # fmt: skip
