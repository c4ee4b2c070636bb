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
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import DatasetError
from ..match.sparse import nearest, unit_rows
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
    if not root.is_dir():
        raise DatasetError(f"TSS not found at {root}: {HELP}")
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


# --------------------------------------------------------------------------- flow prediction
def _cell_flow(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """``(2, n, n)`` nearest-neighbour displacement in cells, target cell → source cell.

    ``fa`` is the target's ``(D, n, n)`` descriptor map, ``fb`` the source's; every cell of
    the source is a candidate (as the reference's ``torch.cdist`` over all 60x60 cells).
    """
    n = fa.shape[-1]
    idx, _ = nearest(unit_rows(fa), unit_rows(fb))
    gy, gx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return torch.stack([(idx % n).reshape(n, n) - gx, (idx // n).reshape(n, n) - gy]).float()


def _bilinear(field: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(K, C)`` samples of ``(C, n, n)`` at continuous cell coordinates (edge-clamped)."""
    n = field.shape[-1]
    u, v = u.clamp(0, n - 1), v.clamp(0, n - 1)
    u0, v0 = u.floor().long().clamp(max=n - 2), v.floor().long().clamp(max=n - 2)
    if n == 1:
        return field[:, 0, 0].expand(len(u), -1)
    fu, fv = (u - u0)[:, None], (v - v0)[:, None]
    f = field.permute(1, 2, 0)
    top = f[v0, u0] * (1 - fu) + f[v0, u0 + 1] * fu
    bottom = f[v0 + 1, u0] * (1 - fu) + f[v0 + 1, u0 + 1] * fu
    return top * (1 - fv) + bottom * fv


def reference_flow_points(
    fa: torch.Tensor,
    fb: torch.Tensor,
    size_a: tuple[int, int],
    size_b: tuple[int, int],
    points: np.ndarray,
) -> np.ndarray:
    """Predicted source positions of target pixels by sd-dino's ``nearest_neighbor_flow``.

    The reference finds, for each target cell, the nearest source cell, takes the displacement
    in cells, resizes that field bilinearly (``align_corners=False``) to ``L x L`` pixels with
    ``L = max(W, H)``, scales it by ``L / n`` and crops the centred padding. Here the
    displacement of a cell is taken in pixels between the two cells' centres, each mapped to its
    own image (identical to the reference's when, as there, both images have the same size).

    Args:
        fa: ``(D, n, n)`` fused descriptors of the target (the TSS image with the mask).
        fb: ``(D, n, n)`` fused descriptors of the source.
        size_a: target ``(W, H)``; size_b: source ``(W, H)``.
        points: ``(K, 2)`` target pixels ``(x, y)``.

    Returns:
        ``(K, 2)`` predicted ``(x, y)`` in the source's original pixels.
    """
    n = fa.shape[-1]
    flow = _cell_flow(fa, fb)

    def centre_px(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        side = max(size)
        off = torch.tensor([(side - size[0]) // 2, (side - size[1]) // 2], dtype=torch.float32)
        return (cells + 0.5) * side / n - 0.5 - off[:, None, None]

    gy, gx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    grid = torch.stack([gx, gy]).float()
    flow_px = centre_px(grid + flow, size_b) - centre_px(grid, size_a)  # (2, n, n)
    side_a = max(size_a)
    pts = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2)
    off_a = torch.tensor([(side_a - size_a[0]) // 2, (side_a - size_a[1]) // 2])
    uv = (pts + off_a + 0.5) * n / side_a - 0.5  # the resize's sample position, in cells
    return (pts + _bilinear(flow_px, uv[:, 0], uv[:, 1])).double().numpy()


class FlowPredictor:
    """sd-dino's dense TSS prediction over a cached ``ModelPredictor``'s pipeline.

    Called on a TSS record (``src_image`` = TSS target, ``trg_image`` = TSS source) it fuses the
    two images' features and returns :func:`reference_flow_points` of the record's points.
    """

    def __init__(self, base: Any) -> None:
        """``base``: a :class:`sdcorr.eval.runner.ModelPredictor` (its pipeline and cache)."""
        self.base = base

    @property
    def cache(self) -> Any:
        """The base predictor's feature cache (for the runner's counters)."""
        return self.base.cache

    def __call__(self, pair: SPairPair) -> np.ndarray:
        """``(K, 2)`` predicted positions in the TSS source of the target's foreground pixels."""
        cat = pair.prompt_name if self.base.use_category else None
        fa, fb = self.base.pipe.fuse(
            self.base.cache.get(pair.src_image, cat), self.base.cache.get(pair.trg_image, cat)
        )
        return reference_flow_points(
            fa.features[0].detach().cpu(), fb.features[0].detach().cpu(),
            pair.src_size, pair.trg_size, pair.src_kps,
        )  # fmt: skip
