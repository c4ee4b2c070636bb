"""Visual outputs: match plots, PCA-RGB feature pictures, the swap image and the swap GIF.

Everything here works on ``(H, W, 3)`` uint8 RGB arrays (PIL images are accepted as inputs) and
is vectorised: frames are built with index arrays, never with per-pixel Python loops.
matplotlib is imported lazily inside :func:`plot_matches` only (``Figure`` + ``FigureCanvasAgg``,
no ``pyplot``), so importing this module changes no global state. Every file is written
atomically (temp name, then rename) through :func:`sdcorr.io.atomic_path`.

Coordinates follow the package convention: ``(x, y)`` in original pixels, pixel centres at
integer coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .fusion import joint_pca
from .io import atomic_path
from .types import FeatureMap, Matches

if TYPE_CHECKING:
    from .match.dense import DenseFlow

__all__ = [
    "ease_out",
    "pca_rgb",
    "plot_matches",
    "save_gif",
    "save_png",
    "side_by_side",
    "swap_frames",
    "swap_frames_from_flow",
    "swap_image",
]

ImageInput = Image.Image | np.ndarray
ArrayLike = np.ndarray | torch.Tensor
WHITE = 255
#: Interior motion frames with ``t`` below this draw squares of ``square`` pixels; the first frame
#: and the end of the motion draw single pixels (as the reference switches to 1x1 for the last
#: sixth), so frame 0 shows A exactly and the last motion frame shows the swap image exactly.
SQUARE_UNTIL = 5 / 6


# --------------------------------------------------------------------------- input checks
def _as_rgb(img: ImageInput, name: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 view of a PIL image or uint8 array (or uint8 tensor)."""
    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB"))
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    if not isinstance(img, np.ndarray):
        raise ValueError(f"{name}: expected a PIL image or uint8 array, got {type(img).__name__}")
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8 or 0 in img.shape:
        raise ValueError(
            f"{name}: expected a (H, W, 3) uint8 array, got shape {img.shape} dtype {img.dtype}"
        )
    return img


def _as_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _as_flow(flow: ArrayLike, h: int, w: int) -> np.ndarray:
    flow = _as_numpy(flow)
    if flow.shape != (h, w, 2):
        raise ValueError(f"flow_b_to_a: expected shape {(h, w, 2)} (B's H, W, 2), got {flow.shape}")
    return flow.astype(np.float64, copy=False)


def _as_mask(mask: ArrayLike | None, h: int, w: int) -> np.ndarray:
    if mask is None:
        return np.ones((h, w), dtype=bool)
    mask = _as_numpy(mask)
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
    a, b = _as_rgb(img_a, "img_a"), _as_rgb(img_b, "img_b")
    flow = _as_flow(flow_b_to_a, *b.shape[:2])
    mask = _as_mask(mask_b, *b.shape[:2])
    yb, xb, ya, xa = _moving_pixels(flow, mask, a.shape[:2])
    out = b.copy()
    out[yb, xb] = a[ya, xa]
    return out


# --------------------------------------------------------------------------- swap animation
def ease_out(t: float | np.ndarray) -> np.ndarray:
    """Quadratic ease-out ``e(t) = 1 - (1 - t)^2``: 0 at t=0, 1 at t=1, fast start, soft landing."""
    t = np.asarray(t, dtype=np.float64)
    return 1.0 - (1.0 - t) ** 2


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, 3)`` uint8 to ``size = (w, h)`` with LANCZOS."""
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


def _downscale(
    a: np.ndarray, b: np.ndarray, flow: np.ndarray, mask: np.ndarray, max_side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shrink A and B by one common factor so that no side exceeds ``max_side``.

    The flow and mask are sampled (nearest) on the new B grid; flow values move to the new A pixels.
    """
    (ha, wa), (hb, wb) = a.shape[:2], b.shape[:2]
    s = max_side / max(ha, wa, hb, wb)
    if s >= 1:
        return a, b, flow, mask
    size_a = (max(1, round(wa * s)), max(1, round(ha * s)))
    size_b = (max(1, round(wb * s)), max(1, round(hb * s)))
    iy = np.minimum(((np.arange(size_b[1]) + 0.5) * hb / size_b[1]).astype(np.int64), hb - 1)
    ix = np.minimum(((np.arange(size_b[0]) + 0.5) * wb / size_b[0]).astype(np.int64), wb - 1)
    scale_a = np.array([size_a[0] / wa, size_a[1] / ha])
    flow = (flow[iy[:, None], ix[None, :]] + 0.5) * scale_a - 0.5
    mask = mask[iy[:, None], ix[None, :]]
    return _resize(a, size_a), _resize(b, size_b), flow, mask


def side_by_side(a: np.ndarray, b: np.ndarray, gap: int = 0, fill: int = WHITE) -> np.ndarray:
    """A at the left, B at the right, both at their own size and top-aligned.

    Args:
        a: ``(Ha, Wa, 3)`` uint8.
        b: ``(Hb, Wb, 3)`` uint8.
        gap: columns between them.
        fill: grey level of the gap and of the space below the shorter image.

    Returns:
        ``(max(Ha, Hb), Wa + gap + Wb, 3)`` uint8; B starts at column ``Wa + gap``.
    """
    (ha, wa), (hb, wb) = a.shape[:2], b.shape[:2]
    canvas = np.full((max(ha, hb), wa + gap + wb, 3), fill, dtype=np.uint8)
    canvas[:ha, :wa] = a
    canvas[:hb, wa + gap :] = b
    return canvas


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

    The canvas is ``A | white gap | B`` (height ``max(Ha, Hb)``, the shorter image padded with
    white at the bottom). Each moving pixel (a pixel of B inside ``mask_b``, carrying A's colour
    at its match, see :func:`swap_image`) travels in a straight line from its source in A to its
    own place in B, at ``src + e(t) * (dst - src)`` with ``e = ease_out`` and
    ``t = k / (n_motion - 1)`` for motion frame ``k``. Positions are rounded to whole pixels and
    drawn over the background in B's row-major order (later pixels win). Frame 0 and the frames
    with ``t >= 5/6`` draw single pixels, the frames between draw ``square x square`` blocks so
    the cloud has no holes while spread out. Hence frame 0 shows A and B unchanged and the last
    motion frame's B panel equals :func:`swap_image` exactly.

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
        ``n_motion + n_hold`` uint8 arrays ``(H, Wa + gap + Wb, 3)``. The hold frames are the
        same read-only array object as the last motion frame.
    """
    if n_motion < 1 or n_hold < 0 or square < 1:
        raise ValueError(
            f"need n_motion >= 1, n_hold >= 0, square >= 1; got {n_motion}, {n_hold}, {square}"
        )
    a, b = _as_rgb(img_a, "img_a"), _as_rgb(img_b, "img_b")
    flow = _as_flow(flow_b_to_a, *b.shape[:2])
    mask = _as_mask(mask_b, *b.shape[:2])
    if max_side is not None:
        if max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {max_side}")
        a, b, flow, mask = _downscale(a, b, flow, mask, max_side)
    wa = a.shape[1]
    gap = wa // 10 if gap is None else gap
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
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
    frames[-1].flags.writeable = False
    return frames + [frames[-1]] * n_hold


def _as_pil(img: ImageInput, name: str) -> Image.Image:
    if isinstance(img, Image.Image):
        return img if img.mode == "RGB" else img.convert("RGB")
    return Image.fromarray(_as_rgb(img, name))


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
    a_img, b_img = _as_pil(img_a, "img_a"), _as_pil(img_b, "img_b")
    (wa, ha), (wb, hb) = a_img.size, b_img.size
    gb = flow.geometry_b
    if (gb.width, gb.height) != (wb, hb) or flow.geometry_a.width != wa:
        raise ValueError(f"flow is for B {gb.width}x{gb.height}, image B is {wb}x{hb}")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    s = 1.0 if max_side is None else min(1.0, max_side / max(ha, wa, hb, wb))
    size_a = (max(1, round(wa * s)), max(1, round(ha * s))) if s < 1 else (wa, ha)
    size_b = (max(1, round(wb * s)), max(1, round(hb * s))) if s < 1 else (wb, hb)
    # B's source pixel of each output pixel (nearest), as in swap_frames' own downscaling
    iy = np.minimum(((np.arange(size_b[1]) + 0.5) * hb / size_b[1]).astype(np.int64), hb - 1)
    ix = np.minimum(((np.arange(size_b[0]) + 0.5) * wb / size_b[0]).astype(np.int64), wb - 1)
    yy, xx = np.meshgrid(iy, ix, indexing="ij")
    pix = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64))
    cells = gb.to_cell(pix)
    field = flow.points_a().float()[cells[:, 1], cells[:, 0]].numpy().astype(np.float64)
    mask = flow.valid[cells[:, 1], cells[:, 0]].numpy().reshape(size_b[1], size_b[0])
    field = field.reshape(size_b[1], size_b[0], 2)
    if s < 1:
        field = (field + 0.5) * np.array([size_a[0] / wa, size_a[1] / ha]) - 0.5
    a = np.asarray(a_img if size_a == (wa, ha) else a_img.resize(size_a, Image.Resampling.LANCZOS))
    b = np.asarray(b_img if size_b == (wb, hb) else b_img.resize(size_b, Image.Resampling.LANCZOS))
    return swap_frames(a, b, field, mask_b=mask, **kwargs)


# --------------------------------------------------------------------------- writing files
def _gif_ms(ms: float) -> int:
    """Round a delay to the GIF resolution (centiseconds), at least 2 cs (browsers' minimum)."""
    return 10 * max(2, round(ms / 10))


def _frame_ms(fps: float) -> int:
    """The one place where frames per second become a GIF delay in milliseconds."""
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return _gif_ms(1000.0 / fps)


def _palette(first: np.ndarray, last: np.ndarray) -> Image.Image:
    """One 256-colour palette (median cut) for the whole GIF, from the first and last frames.

    Lossless when those frames hold at most 256 colours.
    """
    sample = Image.fromarray(np.concatenate([first, last], axis=0))
    return sample.quantize(256, method=Image.Quantize.MEDIANCUT)


def _runs(items: Sequence, same) -> list[tuple[int, int]]:
    """``(first index, length)`` of each run of consecutive equal items."""
    runs: list[tuple[int, int]] = []
    for i, item in enumerate(items):
        if runs and same(items[runs[-1][0]], item):
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def save_gif(
    frames: Sequence[ImageInput], path: str | Path, fps: float = 30, hold_ms: float | None = None
) -> Path:
    """Write frames as a looping GIF with Pillow (atomic write).

    Frame count rule: the file holds one frame per run of consecutive identical frames (compared
    after mapping to the GIF's palette), and a run lasts the sum of its frames' delays. Each
    input frame lasts ``1000 / fps`` ms rounded to the GIF's 10 ms resolution (at least 20 ms):
    30 fps gives 30 ms. With :func:`swap_frames` defaults (30 distinct motion frames + 30 hold
    copies) the file has 30 frames: 29 of 30 ms and a final one of 31 x 30 = 930 ms. The palette
    (256 colours, shared by all frames, no dithering) comes from the first and last frames; it
    is lossless when they hold at most 256 colours.

    Args:
        frames: ``(H, W, 3)`` uint8 arrays (or PIL images), all of one size.
        path: output file.
        fps: input frames per second.
        hold_ms: if given, the duration of the last stored frame instead of its summed delay.

    Returns:
        ``path``.
    """
    arrays = [_as_rgb(f, f"frames[{i}]") for i, f in enumerate(frames)]
    if not arrays:
        raise ValueError("save_gif: expected at least one frame, got none")
    for i, f in enumerate(arrays):
        if f.shape != arrays[0].shape:
            raise ValueError(f"frames[{i}]: expected shape {arrays[0].shape}, got {f.shape}")
    delay = _frame_ms(fps)
    palette = _palette(arrays[0], arrays[-1])
    rgb_runs = _runs(arrays, lambda x, y: x is y or np.array_equal(x, y))
    images = [
        Image.fromarray(arrays[i]).quantize(palette=palette, dither=Image.Dither.NONE)
        for i, _ in rgb_runs
    ]
    p_runs = _runs(images, lambda x, y: x.tobytes() == y.tobytes())
    lengths = [sum(n for _, n in rgb_runs[i : i + m]) for i, m in p_runs]
    images = [images[i] for i, _ in p_runs]
    durations = [n * delay for n in lengths]
    if hold_ms is not None:
        durations[-1] = _gif_ms(hold_ms)
    with atomic_path(path) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
        )
    return Path(path)


def save_png(image: ImageInput, path: str | Path) -> Path:
    """Write one ``(H, W, 3)`` uint8 image (or PIL) as a PNG (atomic write); return ``path``."""
    arr = _as_rgb(image, "image")
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(path)


# --------------------------------------------------------------------------- PCA colours
def _feature_list(features: object) -> list[torch.Tensor]:
    items = features if isinstance(features, (list, tuple)) else [features]
    maps = []
    for i, f in enumerate(items):
        t = f.features if isinstance(f, FeatureMap) else f
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            shape = tuple(t.shape) if hasattr(t, "shape") else type(t).__name__
            raise ValueError(
                f"features[{i}]: expected a FeatureMap or (B, C, h, w) tensor, got {shape}"
            )
        if maps and t.shape[1] != maps[0].shape[1]:
            raise ValueError(
                f"features[{i}]: expected {maps[0].shape[1]} channels, got {t.shape[1]}"
            )
        maps.append(t.detach().cpu().float())
    return maps


def _mask_list(mask: object, maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """One ``(B, h, w)`` bool mask per map (all True when ``mask`` is None)."""
    single = [mask] * (len(maps) if mask is None else 1)
    masks = list(mask) if isinstance(mask, (list, tuple)) else single
    if len(masks) != len(maps):
        raise ValueError(f"mask: expected {len(maps)} masks (one per map), got {len(masks)}")
    out = []
    for i, (m, f) in enumerate(zip(masks, maps, strict=True)):
        want = (f.shape[0], *f.shape[-2:])
        if m is None:
            out.append(torch.ones(want, dtype=torch.bool))
            continue
        m = torch.as_tensor(_as_numpy(m)).bool()
        m = m.unsqueeze(0) if m.ndim == 2 else m
        if tuple(m.shape) != want:
            raise ValueError(
                f"mask[{i}]: expected shape {want} or {want[1:]}, got {tuple(m.shape)}"
            )
        out.append(m)
    return out


def pca_rgb(
    features: FeatureMap | torch.Tensor | Sequence[FeatureMap | torch.Tensor],
    mask: ArrayLike | Sequence[ArrayLike | None] | None = None,
) -> list[np.ndarray]:
    """Colour feature maps by a joint PCA to three components (same part, same colour).

    One PCA is fitted over the (masked) cells of all given maps together, by the fusion's own
    :func:`sdcorr.fusion.joint_pca`: the data are centred, the top three principal axes are taken
    (``eigh``, float64), and each axis's sign is fixed so that its largest-magnitude entry is
    positive (deterministic).
    Each component is min-max scaled to ``[0, 255]`` over all fitted cells, so colours are
    comparable across images.

    Args:
        features: a :class:`FeatureMap` or ``(B, C, h, w)`` tensor, or a list of them (same ``C``;
            grids may differ).
        mask: optional bool mask per map, ``(B, h, w)`` or ``(h, w)`` when ``B == 1`` (a list with
            one entry or None per map). Cells outside are left out of the fit and drawn black.

    Returns:
        One ``(h, w, 3)`` uint8 image per batch element, maps in order, then batch order.
    """
    maps = _feature_list(features)
    masks = _mask_list(mask, maps)
    rows = [f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]) for f in maps]
    keep = [m.reshape(-1) for m in masks]
    if not any(k.any() for k in keep):
        raise ValueError("pca_rgb: the mask selects no cells")
    projs, _ = joint_pca([r[k] for r, k in zip(rows, keep, strict=True)], 3)
    proj = torch.zeros(sum(len(p) for p in projs), 3, dtype=torch.float64)
    proj[:, : projs[0].shape[1]] = torch.cat(projs)
    lo, span = proj.min(0).values, proj.max(0).values - proj.min(0).values
    scaled = ((proj - lo) / torch.where(span > 0, span, 1.0) * 255).round().to(torch.uint8)
    out, start = [], 0
    for f, k in zip(maps, keep, strict=True):
        n = int(k.sum())
        img = torch.zeros(k.shape[0], 3, dtype=torch.uint8)
        img[k] = scaled[start : start + n]
        start += n
        out.extend(img.reshape(f.shape[0], *f.shape[-2:], 3).numpy())
    return out


# --------------------------------------------------------------------------- match plot
def _same_height(
    a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A and B resized to the common height ``max(Ha, Hb)``, and the ``(sx, sy)`` of each."""
    h = max(a.shape[0], b.shape[0])
    scaled, scales = [], []
    for img in (a, b):
        w = max(1, round(img.shape[1] * h / img.shape[0]))
        scaled.append(img if img.shape[:2] == (h, w) else _resize(img, (w, h)))
        scales.append(np.array([w / img.shape[1], h / img.shape[0]]))
    return scaled[0], scaled[1], scales[0], scales[1]


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    a, b = _as_rgb(img_a, "img_a"), _as_rgb(img_b, "img_b")
    m = matches.numpy()
    pa, pb, scores = m["points_a"], m["points_b"], m["scores"]
    if pa.ndim != 2 or pa.shape[1:] != (2,) or pb.shape != pa.shape or scores.shape != pa.shape[:1]:
        raise ValueError(
            f"matches: expected (K, 2), (K, 2), (K,), got {pa.shape}, {pb.shape}, {scores.shape}"
        )
    sel = np.argsort(-scores, kind="stable")[: max(0, max_lines)]
    pa, pb = pa[sel].astype(np.float64), pb[sel].astype(np.float64)
    scaled_a, scaled_b, sa, sb = _same_height(a, b)
    canvas = side_by_side(scaled_a, scaled_b)
    h, w = canvas.shape[:2]
    xa = (pa + 0.5) * sa - 0.5
    xb = (pb + 0.5) * sb - 0.5 + [scaled_a.shape[1], 0]
    colours = matplotlib.colormaps[cmap](
        ((pa[:, 0] + 0.5) / a.shape[1] + (pa[:, 1] + 0.5) / a.shape[0]) / 2
    )
    dpi = 100
    fig = Figure(figsize=((w + 0.5) / dpi, (h + 0.5) / dpi), dpi=dpi)
    agg = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(canvas, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
    ax.add_collection(LineCollection(np.stack([xa, xb], 1), colors=colours, linewidths=linewidth))
    ends = np.concatenate([xa, xb])
    ax.scatter(ends[:, 0], ends[:, 1], c=np.concatenate([colours, colours]), s=dot_size, lw=0)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    agg.draw()
    rgb = np.asarray(agg.buffer_rgba())[..., :3].copy()
    if path is not None:
        save_png(rgb, path)
    return rgb
