"""TSS (Taniai et al., CVPR 2016), sd-dino's dense flow benchmark: the reader and the flow.

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
the **source** image, compared in float32 as there. So each TSS pair becomes a keypoint record
*from the target to the source*: ``src_image`` is the TSS target, ``src_kps`` its foreground
pixels in row-major order ``(x, y)``, ``trg_image`` the TSS source and ``trg_kps = src_kps +
flow``. Per-image PCK is the reference's ``PCK_*_per_image``; the table's categories are the three
subsets. Pair ids are ``<subset>/<folder>/<source>-<target>`` (e.g. ``JODS/horse_1/image1-image2``).

The prediction (:class:`FlowPredictor`) is the reference's: both images padded with black to a
common size (right and bottom, ``pad_to_same_shape``), each padded image extracted, for every
target cell the nearest source cell, the displacement resized to the padded frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DatasetError
from ..image import load_image
from ..match.sparse import descriptors, nearest, rows
from ..types import FeatureMap
from .common import Split, image_size
from .pairs import Pair

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


def open_split(root: Path, split: str = "test", layout: str = "large") -> Split:
    """The pairs of all subsets (``split="test"``) or of one subset, in the reference's order
    (``layout`` is SPair's; unused here).

    Raises:
        DatasetError: naming the missing folder; a pair's files are checked when it is read.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown TSS split '{split}' (valid: {', '.join(SPLITS)})")
    if not root.is_dir():
        raise DatasetError(f"TSS not found at {root}: {HELP}")
    subsets = SUBSETS if split == "test" else (split,)
    for s in subsets:
        if not (root / s).is_dir():
            raise DatasetError(f"{root} has no {s}/ folder: {HELP}")
    entries = []
    for s in subsets:
        for folder in sorted(p for p in (root / s).iterdir() if p.is_dir()):
            entries += [(f"{s}/{folder.name}/image{a}-image{b}", s) for a, b in ((1, 2), (2, 1))]
    if not entries:
        raise DatasetError(f"no TSS pair folders under {root}")
    return Split(entries, lambda name: _pair(root, name))


def _pair(root: Path, name: str) -> Pair:
    subset, folder_name, direction = name.split("/")
    src, trg = (int(part.removeprefix("image")) for part in direction.split("-"))
    folder = root / subset / folder_name
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
    label = object_class(subset, folder.name)
    return Pair(
        name=name, category=subset,
        src_image=trg_img, trg_image=src_img, src_kps=pts, trg_kps=true,
        kps_ids=(), src_size=trg_size, trg_size=src_size,
        src_bbox=(0.0, 0.0, float(trg_size[0]), float(trg_size[1])),
        trg_bbox=(0.0, 0.0, float(w), float(h)),
        prompt_name=label, label=label,
    )  # fmt: skip


# --------------------------------------------------------------------------- flow prediction
def pad_pair(a: Image.Image, b: Image.Image) -> tuple[Image.Image, Image.Image]:
    """Both images padded with black on the right and bottom to their common ``(max W, max H)``
    (the reference's ``pad_to_same_shape``, which leaves every pixel's coordinates as they are)."""
    size = (max(a.width, b.width), max(a.height, b.height))

    def pad(im: Image.Image) -> Image.Image:
        if im.size == size:
            return im
        canvas = Image.new("RGB", size)
        canvas.paste(im, (0, 0))
        return canvas

    return pad(a), pad(b)


def cell_flow(fa: FeatureMap, fb: FeatureMap, metric: str = "cosine") -> torch.Tensor:
    """``(2, n, n)`` nearest-neighbour displacement in cells, target cell → source cell.

    Args:
        fa: ``(1, D, n, n)`` descriptors of the target (the TSS image with the mask).
        fb: ``(1, D, n, n)`` descriptors of the source; every cell is a candidate, as the
            reference's ``torch.cdist`` over all cells.
        metric: ``"cosine"`` (unit-norm descriptors, :func:`sdcorr.match.sparse.nearest`) or
            ``"l2"`` (Euclidean distance between the descriptors as given, the reference's
            ``torch.cdist`` then ``argmin``).
    """
    n = fa.features.shape[-1]
    if metric == "cosine":
        idx, _ = nearest(descriptors(fa), descriptors(fb))
    elif metric == "l2":
        idx, _ = nearest(rows(fa).detach(), rows(fb).detach(), metric="l2")
    else:
        raise ValueError(f"unknown metric {metric!r} (valid: cosine, l2)")
    idx = idx.cpu()
    gy, gx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return torch.stack([(idx % n).reshape(n, n) - gx, (idx // n).reshape(n, n) - gy]).float()


def reference_flow_points(
    flow: torch.Tensor, size: tuple[int, int], points: np.ndarray
) -> np.ndarray:
    """Predicted source positions of target pixels by sd-dino's ``nearest_neighbor_flow``.

    For two images of the same (padded) size ``(W, H)``: the ``(2, n, n)`` cell displacement
    is resized bilinearly (``align_corners=False``) to ``L x L`` with ``L = max(W, H)``, scaled
    by ``L / n`` in float32 and its centred ``H x W`` part read at each target pixel, all in
    the order and precision of the reference.

    Args:
        flow: ``(2, n, n)`` target → source displacement in cells (:func:`cell_flow`).
        size: ``(W, H)`` of both images.
        points: ``(K, 2)`` integer target pixels ``(x, y)``.

    Returns:
        ``(K, 2)`` predicted ``(x, y)`` in the source's pixels (float64 of float32 values).
    """
    w, h = size
    side, n = max(w, h), flow.shape[-1]
    up = F.interpolate(flow[None].float(), size=(side, side), mode="bilinear", align_corners=False)
    up = up * torch.tensor([side / float(n)] * 2, dtype=torch.float32).view(1, 2, 1, 1)
    x0, y0 = (side - w) // 2 if side == h else 0, (side - h) // 2 if side != h else 0
    up = up[0, :, y0 : y0 + h, x0 : x0 + w]
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    sampled = up[:, torch.as_tensor(pts[:, 1]), torch.as_tensor(pts[:, 0])].T
    return pts + sampled.double().numpy()


class FlowPredictor:
    """sd-dino's dense TSS prediction over a :class:`sdcorr.eval.runner.ModelPredictor`.

    Called on a TSS record (``src_image`` = TSS target, ``trg_image`` = TSS source) it pads the
    two images to their common size (:func:`pad_pair`), extracts both, finds for every target
    cell the nearest source cell (:func:`cell_flow`) and returns :func:`reference_flow_points`
    of the record's points. Descriptors: with an SD branch, the pipeline's fused ones (cosine);
    DINO alone, the raw tokens compared by L2 as the reference's ``--ONLY_DINO``.

    Feature cache: padding makes an image's features depend on its partner. A padded image goes
    through the pipeline's cache as the padded picture (keyed by its pixels), never as its file,
    so its features are never served for the unpadded image nor the other way round; the
    folder's second pair (the same two padded images) reuses them. An image that needs no
    padding goes by its file, as in every other pair it appears in.
    """

    def __init__(self, base: Any) -> None:
        """``base``: a ``ModelPredictor`` (its ``pipe``, ``cache`` and ``use_category``)."""
        self.base = base

    @property
    def cache(self) -> Any:
        """The pipeline's feature cache (for the runner's counters)."""
        return self.base.cache

    def _features(self, pair: Pair, category: str | None) -> tuple[Any, Any]:
        paths = (pair.src_image, pair.trg_image)
        images = [load_image(p) for p in paths]
        padded = pad_pair(*images)
        inputs = [p if pad is im else pad for p, im, pad in zip(paths, images, padded, strict=True)]
        ra, rb = self.base.pipe.image_features(inputs, category)
        return ra, rb

    def __call__(self, pair: Pair) -> np.ndarray:
        """``(K, 2)`` predicted positions in the TSS source of the target's foreground pixels."""
        category = pair.prompt_name if self.base.use_category else None
        ra, rb = self._features(pair, category)
        if getattr(self.base.pipe.config, "sd", None) is None:  # DINO alone: raw tokens, L2
            flow = cell_flow(ra.maps["dino"], rb.maps["dino"], "l2")
        else:
            flow = cell_flow(*self.base.pipe.fuse(ra, rb), "cosine")
        size = (max(pair.src_size[0], pair.trg_size[0]), max(pair.src_size[1], pair.trg_size[1]))
        return reference_flow_points(flow, size, pair.src_kps)
