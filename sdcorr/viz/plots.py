"""Drawn pictures: match lines between A and B, a similarity heat map, the point marker.

matplotlib is imported lazily inside :func:`plot_matches` and :func:`heatmap` only (``Figure`` +
``FigureCanvasAgg``, no ``pyplot``), so importing :mod:`sdcorr.viz` changes no global state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..image import Geometry
from ..types import Matches
from .canvas import ImageInput, as_rgb, resize, side_by_side
from .files import save_png

#: Colour of the match marker (pure magenta: rare in photos, easy to find in a screenshot).
MARKER_RGB = (255, 0, 255)


# --------------------------------------------------------------------------- match plot
def _same_height(
    a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A and B resized to the common height ``max(Ha, Hb)``, and the ``(sx, sy)`` of each."""
    h = max(a.shape[0], b.shape[0])
    scaled, scales = [], []
    for img in (a, b):
        w = max(1, round(img.shape[1] * h / img.shape[0]))
        scaled.append(img if img.shape[:2] == (h, w) else resize(img, (w, h)))
        scales.append(np.array([w / img.shape[1], h / img.shape[0]]))
    return scaled[0], scaled[1], scales[0], scales[1]


def _draw_lines(
    canvas: np.ndarray, ends: np.ndarray, colours: np.ndarray, linewidth: float, dot_size: float
) -> np.ndarray:
    """``canvas (H, W, 3)`` with a line and two dots per ``ends (K, 2, 2)`` row: ``(H, W, 3)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    h, w = canvas.shape[:2]
    dpi = 100
    fig = Figure(figsize=((w + 0.5) / dpi, (h + 0.5) / dpi), dpi=dpi)
    agg = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(canvas, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
    ax.add_collection(LineCollection(ends, colors=colours, linewidths=linewidth))
    dots = np.concatenate([ends[:, 0], ends[:, 1]])
    ax.scatter(dots[:, 0], dots[:, 1], c=np.concatenate([colours, colours]), s=dot_size, lw=0)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    agg.draw()
    return np.asarray(agg.buffer_rgba())[..., :3].copy()


def plot_matches(
    img_a: ImageInput,
    img_b: ImageInput,
    matches: Matches,
    path: str | Path | None = None,
    max_lines: int = 200,
    cmap: str = "turbo",
    linewidth: float = 1.0,
    dot_size: float = 6.0,
) -> np.ndarray:
    """Draw matches as lines between A and B shown side by side at the same height.

    Each match is a line with a dot at both ends, coloured through ``cmap`` by its point's
    position in A (``(x / Wa + y / Ha) / 2``), so neighbouring points share hues. When there are
    more than ``max_lines`` matches, the best-scoring ones are drawn (ties keep input order).

    Args:
        img_a: ``(Ha, Wa, 3)`` uint8 (or PIL).
        img_b: ``(Hb, Wb, 3)`` uint8 (or PIL).
        matches: ``points_a``/``points_b`` ``(K, 2)`` original ``(x, y)``, ``scores (K,)``.
        path: if given, the picture is also written there as a PNG.
        max_lines: most matches drawn.
        cmap: matplotlib colormap name.
        linewidth: line width in points.
        dot_size: dot area in points squared.

    Returns:
        ``(H, W, 3)`` uint8 with ``H = max(Ha, Hb)`` and ``W`` the sum of both scaled widths.
    """
    import matplotlib

    a, b = as_rgb(img_a, "img_a"), as_rgb(img_b, "img_b")
    m = matches.numpy()
    pa, pb, scores = m["points_a"], m["points_b"], m["scores"]
    if pa.ndim != 2 or pa.shape[1:] != (2,) or pb.shape != pa.shape or scores.shape != pa.shape[:1]:
        raise ValueError(
            f"matches: expected (K, 2), (K, 2), (K,), got {pa.shape}, {pb.shape}, {scores.shape}"
        )
    sel = np.argsort(-scores, kind="stable")[: max(0, max_lines)]
    pa, pb = pa[sel].astype(np.float64), pb[sel].astype(np.float64)
    scaled_a, scaled_b, sa, sb = _same_height(a, b)
    xa = (pa + 0.5) * sa - 0.5
    xb = (pb + 0.5) * sb - 0.5 + [scaled_a.shape[1], 0]
    colours = matplotlib.colormaps[cmap](
        ((pa[:, 0] + 0.5) / a.shape[1] + (pa[:, 1] + 0.5) / a.shape[0]) / 2
    )
    canvas = side_by_side(scaled_a, scaled_b)
    rgb = _draw_lines(canvas, np.stack([xa, xb], 1), colours, linewidth, dot_size)
    if path is not None:
        save_png(rgb, path)
    return rgb


# --------------------------------------------------------------------------- heat map, marker
def heatmap(
    image_b: np.ndarray, sim: torch.Tensor, geo_b: Geometry, alpha: float = 0.6
) -> np.ndarray:
    """B blended with a turbo colour map of a similarity grid.

    Args:
        image_b: ``(Hb, Wb, 3)`` uint8.
        sim: ``(h', w')`` values on B's grid (e.g. :func:`sdcorr.match.sparse.point_similarity`),
            min-max scaled over B's content cells.
        geo_b: B's grid geometry (each pixel takes its cell's value).
        alpha: weight of the colour map.

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
