"""Pictures and arrays shared by ``sdcorr demo`` and ``sdcorr match --flow/--pca``.

Pure numpy/torch (no Gradio): grid values lifted to original pixels, joint PCA colours of a
fused pair, the similarity heat map of one point, the point marker, and the dense-flow arrays.
Every file is written atomically (temp name, then rename).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..image import Geometry
from ..types import FeatureMap

#: Colour of the match marker (pure magenta: rare in photos, easy to find in a screenshot).
MARKER_RGB = (255, 0, 255)


def pca_images(fa: FeatureMap, fb: FeatureMap) -> tuple[np.ndarray, np.ndarray]:
    """Joint PCA colours of a fused pair, at each image's original size.

    One PCA (:func:`sdcorr.viz.pca_rgb`) is fitted on the content cells of both maps (padding
    cells are left out), so the same part gets the same colour in both images.

    Args:
        fa: ``(1, C, h, w)`` fused descriptors of A.
        fb: ``(1, C, h', w')`` fused descriptors of B.

    Returns:
        ``(Ha, Wa, 3)`` and ``(Hb, Wb, 3)`` uint8.
    """
    from ..viz import pca_rgb

    ga, gb = fa.geometry[0], fb.geometry[0]
    rgb_a, rgb_b = pca_rgb([fa, fb], mask=[ga.content_mask(), gb.content_mask()])
    return ga.grid_to_pixels(rgb_a).numpy(), gb.grid_to_pixels(rgb_b).numpy()


def pca_panel(fa: FeatureMap, fb: FeatureMap) -> np.ndarray:
    """Both images side by side in joint PCA colours: ``(max(Ha, Hb), Wa + Wb, 3)`` uint8."""
    from ..viz import side_by_side

    return side_by_side(*pca_images(fa, fb), fill=0)


def heatmap(image_b: np.ndarray, sim: torch.Tensor, geo_b: Geometry, alpha: float = 0.6):
    """B blended with a colour map of ``sim (h', w')`` (scaled over B's content cells).

    Returns:
        ``(Hb, Wb, 3)`` uint8.
    """
    import matplotlib

    content = geo_b.content_mask()
    lo, hi = sim[content].min(), sim[content].max()
    scaled = ((sim - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    colours = matplotlib.colormaps["turbo"](geo_b.grid_to_pixels(scaled).numpy())[..., :3] * 255
    out = (1 - alpha) * image_b.astype(np.float64) + alpha * colours
    return out.round().clip(0, 255).astype(np.uint8)


def draw_marker(image: np.ndarray, xy: tuple[float, float], radius: int = 8) -> np.ndarray:
    """A copy of ``image (H, W, 3)`` uint8 marking ``xy`` (original pixels): a one-pixel
    :data:`MARKER_RGB` crosshair across the whole image through the pixel nearest ``xy``, and a
    white ring around it. The full-length lines are never clipped, so :func:`marker_centre`
    finds the point exactly even at the image border."""
    out = np.array(image, dtype=np.uint8, copy=True)
    x = int(np.clip(round(xy[0]), 0, out.shape[1] - 1))
    y = int(np.clip(round(xy[1]), 0, out.shape[0] - 1))
    im = Image.fromarray(out)
    r = radius
    ImageDraw.Draw(im).ellipse((x - r, y - r, x + r, y + r), outline=(255, 255, 255), width=2)
    out = np.asarray(im).copy()
    out[y, :] = MARKER_RGB
    out[:, x] = MARKER_RGB
    return out


def marker_centre(image: np.ndarray, tol: int = 8) -> tuple[int, int] | None:
    """``(x, y)`` of the crosshair drawn by :func:`draw_marker`, ``None`` if there is none.

    The column (row) holding the most :data:`MARKER_RGB` pixels, if at least half of it is.
    """
    diff = np.abs(image[..., :3].astype(np.int16) - np.array(MARKER_RGB)).max(axis=-1)
    hit = diff <= tol
    cols, rows = hit.sum(axis=0), hit.sum(axis=1)
    x, y = int(cols.argmax()), int(rows.argmax())
    if cols[x] < image.shape[0] / 2 or rows[y] < image.shape[1] / 2:
        return None
    return x, y


def save_pca(path: str | Path, fa: FeatureMap, fb: FeatureMap) -> Path:
    """Write :func:`pca_panel` as a PNG (atomic); return ``path``."""
    from ..viz import save_png

    return save_png(pca_panel(fa, fb), path)
