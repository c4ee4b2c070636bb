"""Image loading and the geometry between original pixels, the model frame and feature grids.

Conventions (see DESIGN.md):

* Public coordinates are ``(x, y)`` in original-image pixels, float, with pixel centres at
  integer coordinates, so the image covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.
* The model frame is a ``frame x frame`` square: the image is resized (aspect kept, long side to
  ``frame``, short side ``round(frame * short / long)``, PIL LANCZOS) and pasted centred on black
  padding at offset ``pad = ((frame - w') // 2, (frame - h') // 2)``. Never a crop.
* Points move between original pixels and the frame by the SD-DINO reference's rule,
  ``x_frame = x * frame / max(W, H) + pad`` (one scale for both axes, no half-pixel terms), and
  back by its exact inverse.
* A feature grid of ``n = (frame - patch) // stride + 1`` cells per side; cell ``i`` owns frame
  coordinates ``[i * stride + d, (i + 1) * stride + d)`` with ``d = (patch - stride) / 2`` and its
  centre is ``i * stride + (patch - 1) / 2``. With ``patch == stride`` (the default) a point goes
  to cell ``int(x_frame / stride)`` and cell ``i`` of DINOv2 at 840 has its centre at
  ``14 i + 6.5``, exactly as in the reference code; a point at a cell centre maps to that cell and
  back to itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError, PointsError

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor

__all__ = ["Geometry", "ImageLike", "PreparedImage", "load_image", "prepare_image"]


@dataclass(frozen=True)
class Geometry:
    """Maps between original pixels, the square model frame and a feature grid.

    Attributes:
        width: original image width in pixels.
        height: original image height in pixels.
        frame: side of the square model frame in pixels.
        stride: grid step in frame pixels (1 = the frame's own pixel grid); fractional for
            resampled maps (a 60-cell map of an 840 frame resized to 156 cells has stride
            840/156).
        patch: side of a grid cell in frame pixels (defaults to ``stride``; larger for
            overlapping ViT patches).
    """

    width: int
    height: int
    frame: int
    stride: float = 1
    patch: float | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ImageLoadError(f"image has zero size ({self.width}x{self.height})")
        if self.frame <= 0 or self.stride <= 0 or self.cell > self.frame:
            raise ValueError(f"invalid geometry: frame={self.frame} stride={self.stride}")

    # ----------------------------------------------------------------- derived sizes
    @property
    def cell(self) -> float:
        """Side of one grid cell in frame pixels."""
        return self.patch if self.patch is not None else self.stride

    @property
    def resized(self) -> tuple[int, int]:
        """``(w', h')``: size of the image content inside the frame."""
        long = max(self.width, self.height)
        w = self.frame if self.width == long else round(self.frame * self.width / long)
        h = self.frame if self.height == long else round(self.frame * self.height / long)
        return max(1, w), max(1, h)

    @property
    def offset(self) -> tuple[int, int]:
        """``(ox, oy)``: top-left corner of the content inside the frame."""
        w, h = self.resized
        return (self.frame - w) // 2, (self.frame - h) // 2

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the feature grid (square)."""
        n = math.floor((self.frame - self.cell) / self.stride + 1e-6) + 1
        return n, n

    def with_grid(self, stride: float, patch: float | None = None) -> Geometry:
        """The same image placement with another feature grid."""
        return replace(self, stride=stride, patch=patch)

    def resampled(self, n: int) -> Geometry:
        """Geometry of this grid bilinearly resized to ``n x n`` cells (``align_corners=False``)."""
        span = self.grid[0] * self.stride  # frame pixels covered by the cells
        return replace(self, stride=span / n, patch=None)

    @property
    def scale(self) -> float:
        """Frame pixels per original pixel, ``frame / max(W, H)`` (both axes)."""
        return self.frame / max(self.width, self.height)

    def _offset(self) -> torch.Tensor:
        return torch.tensor(self.offset, dtype=torch.float64)

    # ----------------------------------------------------------------- point maps
    def to_frame(self, points: torch.Tensor) -> torch.Tensor:
        """Original pixels ``(K, 2)`` → model-frame pixels ``(K, 2)`` (float64).

        The reference's rule ``x * frame / max(W, H) + pad`` (no half-pixel terms).
        """
        p = _as_points(points)
        return p * self.scale + self._offset()

    def from_frame(self, points: torch.Tensor) -> torch.Tensor:
        """Model-frame pixels ``(K, 2)`` → original pixels ``(K, 2)`` (float64).

        The exact inverse of :meth:`to_frame`: ``(x_frame - pad) * max(W, H) / frame``.
        """
        p = _as_points(points)
        return (p - self._offset()) / self.scale

    def frame_to_cell(self, points: torch.Tensor) -> torch.Tensor:
        """Frame pixels ``(K, 2)`` → containing grid cell ``(K, 2)`` as ``(col, row)`` int64.

        ``floor((x_frame - d) / stride)`` with ``d = (patch - stride) / 2``; for ``patch ==
        stride`` this is the reference's ``int(n / frame * x_frame)``. Points beyond the grid
        (the frame's far border, or a point half a pixel left of a zero-padding image) are
        clamped into it.
        """
        p = _as_points(points)
        half = (self.cell - self.stride) / 2
        idx = torch.floor((p - half) / self.stride).long()
        return idx.clamp(0, self.grid[0] - 1)

    def cell_centre(self, cells: torch.Tensor) -> torch.Tensor:
        """Grid cells ``(K, 2)`` as ``(col, row)`` (int or fractional) → frame pixels ``(K, 2)``."""
        c = _as_points(cells)
        return c * self.stride + (self.cell - 1) / 2

    def to_cell(self, points: torch.Tensor) -> torch.Tensor:
        """Original pixels ``(K, 2)`` → grid cell ``(K, 2)`` as ``(col, row)`` int64."""
        return self.frame_to_cell(self.to_frame(points))

    def cell_to_original(self, cells: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """Grid cells ``(K, 2)`` → original pixels ``(K, 2)`` (cell centres).

        Args:
            cells: ``(col, row)`` per point; fractional values (soft-argmax) are allowed.
            clip: a cell that straddles the image border has its centre in the padding; with
                ``clip`` the result is the nearest pixel centre of the image inside that cell
                (the cell covers it). Cells wholly in the padding should be excluded upstream
                (see :meth:`content_mask`).
        """
        p = self.from_frame(self.cell_centre(cells))
        if clip:
            p[:, 0] = p[:, 0].clamp(0, self.width - 1)
            p[:, 1] = p[:, 1].clamp(0, self.height - 1)
        return p

    def inside(self, points: torch.Tensor) -> torch.Tensor:
        """``(K,)`` bool: which original-pixel points lie on the image (edges included)."""
        p = _as_points(points)
        return (
            (p[:, 0] >= -0.5)
            & (p[:, 0] <= self.width - 0.5)
            & (p[:, 1] >= -0.5)
            & (p[:, 1] <= self.height - 0.5)
        )

    def check_inside(self, points: torch.Tensor, what: str = "points") -> torch.Tensor:
        """Return ``points`` as ``(K, 2)`` float64; raise :class:`PointsError` if any is off the image."""
        p = _as_points(points)
        bad = (~self.inside(p)).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            x, y = p[i].tolist()
            raise PointsError(
                f"{len(bad)} of {len(p)} {what} lie outside the {self.width}x{self.height} image "
                f"(first: #{i} at ({x:g}, {y:g}))"
            )
        return p

    def content_mask(self) -> torch.Tensor:
        """``(h, w)`` bool: grid cells that overlap the image content (not only padding)."""
        (ox, oy), (w, h) = self.offset, self.resized
        start = torch.arange(self.grid[0]) * self.stride
        cols = (start < ox + w) & (start + self.cell > ox)
        rows = (start < oy + h) & (start + self.cell > oy)
        return rows[:, None] & cols[None, :]

    def mask_to_grid(self, mask: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Sample an original-size bool mask ``(H, W)`` at every cell centre → ``(h, w)`` bool.

        Cells wholly in the padding are ``False``.
        """
        m = torch.as_tensor(np.asarray(mask)).bool()
        if tuple(m.shape) != (self.height, self.width):
            raise ValueError(f"mask is {tuple(m.shape)}, image is {(self.height, self.width)}")
        n = self.grid[0]
        rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        cells = torch.stack([cols.flatten(), rows.flatten()], dim=1)
        p = self.cell_to_original(cells).round().long()
        return m[p[:, 1], p[:, 0]].view(n, n) & self.content_mask()

    def pixel_centres(self) -> torch.Tensor:
        """``(H * W, 2)`` float64 ``(x, y)`` of every pixel of the original image, row-major."""
        ys, xs = torch.meshgrid(
            torch.arange(self.height, dtype=torch.float64),
            torch.arange(self.width, dtype=torch.float64),
            indexing="ij",
        )
        return torch.stack([xs.flatten(), ys.flatten()], dim=1)

    def pixel_cells(self) -> torch.Tensor:
        """``(H, W, 2)`` int64 ``(col, row)`` of the grid cell containing each original pixel."""
        return self.to_cell(self.pixel_centres()).view(self.height, self.width, 2)

    def grid_to_pixels(self, values: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Lift per-cell values to the original pixels: each pixel takes its cell's value.

        Args:
            values: ``(h, w, ...)`` on this grid (a tensor or numpy array, any dtype).

        Returns:
            ``(H, W, ...)`` tensor of the same dtype (a new tensor, never a view of ``values``).
        """
        v = torch.as_tensor(values)
        if tuple(v.shape[:2]) != self.grid:
            raise ValueError(f"values are {tuple(v.shape)}, expected the grid {self.grid} first")
        cells = self.pixel_cells()
        return v[cells[..., 1], cells[..., 0]]

    def grid_points(self, step: int = 1) -> torch.Tensor:
        """Original-pixel centres of every ``step``-th content cell, ``(K, 2)`` row-major."""
        n = self.grid[0]
        rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        keep = self.content_mask() & (rows % step == 0) & (cols % step == 0)
        cells = torch.stack([cols[keep], rows[keep]], dim=1)
        return self.cell_to_original(cells)


def _as_points(points: torch.Tensor | np.ndarray | list) -> torch.Tensor:
    p = torch.as_tensor(points, dtype=torch.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise PointsError(f"points must have shape (K, 2) as (x, y), got {tuple(p.shape)}")
    if not torch.isfinite(p).all():
        raise PointsError("points contain NaN or infinite values")
    return p


# --------------------------------------------------------------------------- loading
def load_image(src: ImageLike) -> Image.Image:
    """Load an image as an RGB PIL image.

    Args:
        src: a path, a PIL image, a numpy array ``(H, W)`` / ``(H, W, 3|4)`` (uint8, or float in
            ``[0, 1]``) or a tensor ``(3, H, W)`` / ``(H, W)`` (uint8, or float in ``[0, 1]``).

    Returns:
        RGB image with EXIF orientation applied (grey, palette, RGBA and CMYK are converted).

    Raises:
        ImageLoadError: the file is missing, is not an image, has zero size, or has more than
            twice ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's decompression-bomb guard).
    """
    if isinstance(src, (str, Path)):
        img = _open(Path(src))
    elif isinstance(src, Image.Image):
        img = src
    elif isinstance(src, torch.Tensor):
        img = _from_array(_tensor_to_hwc(src))
    elif isinstance(src, np.ndarray):
        img = _from_array(src)
    else:
        raise ImageLoadError(f"cannot load an image from {type(src).__name__}")
    if img.width == 0 or img.height == 0:
        raise ImageLoadError(f"image has zero size ({img.width}x{img.height})")
    img = ImageOps.exif_transpose(img)
    return _to_rgb(img)


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageLoadError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageLoadError(f"expected an image file, got a folder: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy() if im.mode != "P" else im.convert("RGBA")
    except Image.DecompressionBombError:
        raise ImageLoadError(
            f"image too large: {path} has more than twice Pillow's limit of "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels (decompression-bomb guard); shrink it, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"not a readable image: {path} ({type(err).__name__})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(img, dtype=np.float64)
        span = a.max() - a.min()
        a = (a - a.min()) / span * 255 if span > 0 else np.zeros_like(a)
        img = Image.fromarray(a.round().astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


def _tensor_to_hwc(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.ndim == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
        t = t.permute(1, 2, 0)
    return t.numpy()


def _from_array(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageLoadError(f"array must be (H, W) or (H, W, 3|4), got shape {a.shape}")
    if a.size == 0:
        raise ImageLoadError(f"image has zero size (array shape {a.shape})")
    if a.dtype != np.uint8:
        a = np.clip(np.asarray(a, dtype=np.float64), 0.0, 1.0) * 255.0
        a = a.round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a))


# --------------------------------------------------------------------------- framing
@dataclass(frozen=True)
class PreparedImage:
    """An image placed in the square model frame.

    Attributes:
        pixels: ``(3, frame, frame)`` float32 in ``[0, 1]``, black padding.
        geometry: placement of the original image (frame pixel grid, ``stride=1``).
    """

    pixels: torch.Tensor
    geometry: Geometry


def prepare_image(image: ImageLike, frame: int) -> PreparedImage:
    """Resize (aspect kept, LANCZOS) and centre-pad an image into a ``frame x frame`` square.

    Args:
        image: anything :func:`load_image` accepts.
        frame: side of the square model frame in pixels.

    Returns:
        The framed image and its :class:`Geometry`.
    """
    img = load_image(image)
    geo = Geometry(img.width, img.height, frame)
    w, h = geo.resized
    resized = img if (w, h) == img.size else img.resize((w, h), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (frame, frame), (0, 0, 0))
    canvas.paste(resized, geo.offset)
    arr = np.asarray(canvas, dtype=np.float32) / 255.0
    return PreparedImage(torch.from_numpy(arr).permute(2, 0, 1).contiguous(), geo)
