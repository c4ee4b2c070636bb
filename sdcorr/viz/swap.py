"""The swap image and the swap animation: B repainted with A's colours at the matched positions.

All frames are computed with numpy index arrays (no per-pixel Python loops). Coordinates are
``(x, y)`` in original pixels, pixel centres at integer coordinates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .canvas import WHITE, ArrayLike, ImageInput, as_numpy, as_pil, as_rgb, resize, side_by_side

if TYPE_CHECKING:
    from ..match.dense import DenseFlow

#: Interior motion frames with ``t`` below this draw squares of ``square`` pixels; the first frame
#: and the end of the motion draw single pixels (as the reference switches to 1x1 for the last
#: sixth), so frame 0 shows A exactly and the last motion frame shows the swap image exactly.
SQUARE_UNTIL = 5 / 6
Size = tuple[int, int]  # (w, h)


# --------------------------------------------------------------------------- input checks
def _as_flow(flow: ArrayLike, h: int, w: int) -> np.ndarray:
    flow = as_numpy(flow)
    if flow.shape != (h, w, 2):
        raise ValueError(f"flow_b_to_a: expected shape {(h, w, 2)} (B's H, W, 2), got {flow.shape}")
    return flow.astype(np.float64, copy=False)


def _as_mask(mask: ArrayLike | None, h: int, w: int) -> np.ndarray:
    if mask is None:
        return np.ones((h, w), dtype=bool)
    mask = as_numpy(mask)
    if mask.shape != (h, w):
        raise ValueError(f"mask_b: expected shape {(h, w)} (B's H, W), got {mask.shape}")
    return mask.astype(bool, copy=False)


# --------------------------------------------------------------------------- swap image
def _moving_pixels(
    flow: np.ndarray, mask: np.ndarray, size_a: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row-major ``(yb, xb, ya, xa)`` int arrays of the masked B pixels and their A pixels.

    The A position is the flow rounded to the nearest pixel (halves round up) and clipped into A.
    Pixels with a non-finite flow do not move.
    """
    ha, wa = size_a
    keep = mask & np.isfinite(flow).all(axis=-1)
    yb, xb = np.nonzero(keep)
    src = np.floor(flow[yb, xb] + 0.5)
    xa = np.clip(src[:, 0], 0, wa - 1).astype(np.int64)
    ya = np.clip(src[:, 1], 0, ha - 1).astype(np.int64)
    return yb, xb, ya, xa


def swap_image(
    img_a: ImageInput,
    img_b: ImageInput,
    flow_b_to_a: ArrayLike,
    mask_b: ArrayLike | None = None,
) -> np.ndarray:
    """Repaint B with A's colours at the matched positions (instance swapping, no refinement).

    Args:
        img_a: appearance image ``(Ha, Wa, 3)`` uint8 (or PIL).
        img_b: geometry image ``(Hb, Wb, 3)`` uint8 (or PIL).
        flow_b_to_a: ``(Hb, Wb, 2)`` float, for each pixel of B the ``(x, y)`` it matches in A's
            pixels. Rounded to the nearest pixel and clipped into A; non-finite entries keep B.
        mask_b: optional ``(Hb, Wb)`` bool; only these pixels are repainted (all when None).

    Returns:
        ``(Hb, Wb, 3)`` uint8: B, with every masked pixel replaced by A's pixel at its match.
    """
    a, b, flow, mask = _checked_inputs(img_a, img_b, flow_b_to_a, mask_b)
    yb, xb, ya, xa = _moving_pixels(flow, mask, a.shape[:2])
    out = b.copy()
    out[yb, xb] = a[ya, xa]
    return out


# --------------------------------------------------------------------------- shrinking
def _fit(size_a: Size, size_b: Size, max_side: int | None) -> tuple[float, Size, Size]:
    """One shrink factor ``s`` for A and B so that no side exceeds ``max_side`` (``s = 1``: no
    shrinking, the sizes unchanged), and the new ``(w, h)`` of A and of B."""
    (wa, ha), (wb, hb) = size_a, size_b
    s = 1.0 if max_side is None else min(1.0, max_side / max(ha, wa, hb, wb))
    if s >= 1:
        return 1.0, size_a, size_b
    return s, _scaled((wa, ha), s), _scaled((wb, hb), s)


def _scaled(size: Size, s: float) -> Size:
    return max(1, round(size[0] * s)), max(1, round(size[1] * s))


def _source_index(size_out: Size, size_in: Size) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)``: the input pixel (nearest) under each output pixel of a resize."""
    (wo, ho), (wi, hi) = size_out, size_in
    iy = np.minimum(((np.arange(ho) + 0.5) * hi / ho).astype(np.int64), hi - 1)
    ix = np.minimum(((np.arange(wo) + 0.5) * wi / wo).astype(np.int64), wi - 1)
    return iy, ix


def _rescale_points(xy: np.ndarray, size_in: Size, size_out: Size) -> np.ndarray:
    """``(..., 2)`` pixel positions of an image of ``size_in`` moved to its resize ``size_out``."""
    return (xy + 0.5) * np.array([size_out[0] / size_in[0], size_out[1] / size_in[1]]) - 0.5


def _downscale(
    a: np.ndarray, b: np.ndarray, flow: np.ndarray, mask: np.ndarray, max_side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shrink A and B by one common factor so that no side exceeds ``max_side``.

    The flow and mask are sampled (nearest) on the new B grid; flow values move to the new A pixels.
    """
    (ha, wa), (hb, wb) = a.shape[:2], b.shape[:2]
    s, size_a, size_b = _fit((wa, ha), (wb, hb), max_side)
    if s >= 1:
        return a, b, flow, mask
    iy, ix = _source_index(size_b, (wb, hb))
    flow = _rescale_points(flow[iy[:, None], ix[None, :]], (wa, ha), size_a)
    mask = mask[iy[:, None], ix[None, :]]
    return resize(a, size_a), resize(b, size_b), flow, mask


# --------------------------------------------------------------------------- swap animation
def ease_out(t: float | np.ndarray) -> np.ndarray:
    """Quadratic ease-out ``e(t) = 1 - (1 - t)^2``: 0 at t=0, 1 at t=1, fast start, soft landing."""
    t = np.asarray(t, dtype=np.float64)
    return 1.0 - (1.0 - t) ** 2


def _splat(background: np.ndarray, xy: np.ndarray, colours: np.ndarray, square: int) -> np.ndarray:
    """Draw ``(N, 2)`` float ``(x, y)`` as ``square x square`` blocks over a copy of the background.

    A block's top-left pixel is the rounded position; where blocks overlap, the later point wins.
    """
    frame = background.copy()
    h, w = frame.shape[:2]
    xy = np.floor(xy + 0.5).astype(np.int64)
    if square > 1:
        d = np.arange(square)
        offsets = np.stack(np.meshgrid(d, d, indexing="xy"), axis=-1).reshape(-1, 2)
        xy = (xy[:, None, :] + offsets[None]).reshape(-1, 2)
        colours = np.repeat(colours, square * square, axis=0)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    flat = xy[inside, 1] * w + xy[inside, 0]
    order = np.nonzero(inside)[0]
    winner = np.full(h * w, -1, dtype=np.int64)
    np.maximum.at(winner, flat, order)  # explicit "last write wins", independent of numpy internals
    hit = np.nonzero(winner >= 0)[0]
    pixels = frame.reshape(-1, 3).view("V3").ravel()  # one 3-byte item per pixel: faster copies
    pixels[hit] = np.ascontiguousarray(colours).view("V3").ravel()[winner[hit]]
    return frame


def _checked_inputs(
    img_a: ImageInput,
    img_b: ImageInput,
    flow_b_to_a: ArrayLike,
    mask_b: ArrayLike | None,
    max_side: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A, B, flow and mask of :func:`swap_image` / :func:`swap_frames`, checked (and shrunk so
    that no side exceeds ``max_side`` when it is given)."""
    a, b = as_rgb(img_a, "img_a"), as_rgb(img_b, "img_b")
    flow = _as_flow(flow_b_to_a, *b.shape[:2])
    mask = _as_mask(mask_b, *b.shape[:2])
    if max_side is not None:
        if max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {max_side}")
        a, b, flow, mask = _downscale(a, b, flow, mask, max_side)
    return a, b, flow, mask


def swap_frames(
    img_a: ImageInput,
    img_b: ImageInput,
    flow_b_to_a: ArrayLike,
    mask_b: ArrayLike | None = None,
    n_motion: int = 30,
    n_hold: int = 30,
    gap: int | None = None,
    max_side: int | None = None,
    square: int = 2,
) -> list[np.ndarray]:
    """Frames of the swap animation: A's pixels fly to their matches in B.

    The canvas is ``A | white gap | B`` (:func:`~sdcorr.viz.canvas.side_by_side`). Each moving
    pixel (a pixel of B inside ``mask_b``, carrying A's colour at its match, see
    :func:`swap_image`) travels in a straight line from its source in A to its own place in B,
    at ``src + e(t) * (dst - src)`` with ``e = ease_out`` and ``t = k / (n_motion - 1)`` for
    motion frame ``k``. Positions are rounded to whole pixels and drawn over the background in
    B's row-major order (later pixels win). Frame 0 and the frames with ``t >= 5/6`` draw single
    pixels, the frames between ``square x square`` blocks so the cloud has no holes while spread
    out. Hence frame 0 shows A and B unchanged and the last motion frame's B panel equals
    :func:`swap_image` exactly.

    Args:
        img_a: appearance image ``(Ha, Wa, 3)`` uint8 (or PIL).
        img_b: geometry image ``(Hb, Wb, 3)`` uint8 (or PIL).
        flow_b_to_a: ``(Hb, Wb, 2)`` float ``(x, y)`` in A's pixels for each pixel of B.
        mask_b: optional ``(Hb, Wb)`` bool; the pixels that move (all when None).
        n_motion: number of motion frames (``>= 1``; one frame shows the end state).
        n_hold: number of copies of the last motion frame appended (``>= 0``).
        gap: width of the white gap in pixels (default ``Wa // 10`` after downscaling).
        max_side: if given, A and B are shrunk by one common factor so that the longest side of
            either is at most this; the flow and mask are resampled consistently.
        square: block side used by the interior motion frames (1 = always single pixels).

    Returns:
        ``n_motion + n_hold`` uint8 arrays ``(max(Ha, Hb), Wa + gap + Wb, 3)``. The hold frames
        are the same read-only array object as the last motion frame.
    """
    if n_motion < 1 or n_hold < 0 or square < 1:
        raise ValueError(
            f"need n_motion >= 1, n_hold >= 0, square >= 1; got {n_motion}, {n_hold}, {square}"
        )
    a, b, flow, mask = _checked_inputs(img_a, img_b, flow_b_to_a, mask_b, max_side)
    gap = a.shape[1] // 10 if gap is None else gap
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    frames = _motion_frames(a, b, flow, mask, gap, n_motion, square)
    frames[-1].flags.writeable = False
    return frames + [frames[-1]] * n_hold


def _motion_frames(
    a: np.ndarray,
    b: np.ndarray,
    flow: np.ndarray,
    mask: np.ndarray,
    gap: int,
    n_motion: int,
    square: int,
) -> list[np.ndarray]:
    """The ``n_motion`` frames of :func:`swap_frames` on the ``A | gap | B`` canvas."""
    wa = a.shape[1]
    background = side_by_side(a, b, gap, WHITE)
    yb, xb, ya, xa = _moving_pixels(flow, mask, a.shape[:2])
    colours = a[ya, xa]
    src = np.stack([xa, ya], axis=1).astype(np.float64)
    dst = np.stack([xb + wa + gap, yb], axis=1).astype(np.float64)
    frames = []
    for k in range(n_motion):
        t = k / (n_motion - 1) if n_motion > 1 else 1.0
        size = square if 0 < t < SQUARE_UNTIL else 1
        frames.append(_splat(background, src + ease_out(t) * (dst - src), colours, size))
    return frames


def _flow_at_output(flow: DenseFlow, size_b: Size) -> tuple[np.ndarray, np.ndarray]:
    """The flow's ``(h, w, 2)`` float64 match in A's original pixels and ``(h, w)`` validity at
    the pixels of B resized to ``size_b = (w, h)`` (each output pixel reads B's pixel under it)."""
    gb = flow.geometry_b
    iy, ix = _source_index(size_b, (gb.width, gb.height))
    yy, xx = np.meshgrid(iy, ix, indexing="ij")
    pix = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64))
    cells = gb.to_cell(pix)
    field = flow.points_a().float()[cells[:, 1], cells[:, 0]].numpy().astype(np.float64)
    mask = flow.valid[cells[:, 1], cells[:, 0]].numpy().reshape(size_b[1], size_b[0])
    return field.reshape(size_b[1], size_b[0], 2), mask


def swap_frames_from_flow(
    img_a: ImageInput,
    img_b: ImageInput,
    flow: DenseFlow,
    max_side: int | None = None,
    **kwargs: Any,
) -> list[np.ndarray]:
    """:func:`swap_frames` straight from a :class:`~sdcorr.match.dense.DenseFlow`, built at the
    output size.

    A and B are shrunk first (one common factor, so no side exceeds ``max_side``) and the flow is
    looked up only at the shrunk B's pixels, so no per-pixel map of the full-size images is ever
    built: beyond the decoded inputs, memory depends on the output size, not the input's
    megapixels. The frames equal ``swap_frames(a, b, flow.to_pixels("nearest"),
    mask_b=flow.valid_pixels(), max_side=max_side)``.

    Args:
        img_a: appearance image (PIL or ``(Ha, Wa, 3)`` uint8) of ``flow.geometry_a``'s size.
        img_b: geometry image (PIL or ``(Hb, Wb, 3)`` uint8) of ``flow.geometry_b``'s size.
        flow: dense B → A match; pixels of B whose cell is not ``valid`` do not move.
        max_side: longest side of either panel (``None``: full size).
        **kwargs: ``n_motion``, ``n_hold``, ``gap``, ``square`` of :func:`swap_frames`.

    Returns:
        The frames of :func:`swap_frames`.
    """
    a_img, b_img = as_pil(img_a, "img_a"), as_pil(img_b, "img_b")
    gb = flow.geometry_b
    if (gb.width, gb.height) != b_img.size or flow.geometry_a.width != a_img.width:
        raise ValueError(
            f"flow is for B {gb.width}x{gb.height}, image B is {b_img.width}x{b_img.height}"
        )
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    s, size_a, size_b = _fit(a_img.size, b_img.size, max_side)
    field, mask = _flow_at_output(flow, size_b)
    if s < 1:
        field = _rescale_points(field, a_img.size, size_a)
    a, b = (
        np.asarray(im if size == im.size else im.resize(size, Image.Resampling.LANCZOS))
        for im, size in ((a_img, size_a), (b_img, size_b))
    )
    return swap_frames(a, b, field, mask_b=mask, **kwargs)
