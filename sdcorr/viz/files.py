"""Writing pictures: the GIF, PNGs and the PCA panel (every file atomically: temp name, then rename).

The GIF is written with Pillow directly (no imageio): frames per second become milliseconds in
one place (:func:`_frame_ms`), runs of identical frames are stored once, and one 256-colour
palette serves every frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..io import atomic_path
from ..types import FeatureMap
from .canvas import ImageInput, as_rgb
from .pca import pca_panel


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


def _runs(items: Sequence[Any], same: Callable[[Any, Any], bool]) -> list[tuple[int, int]]:
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
    arrays = [as_rgb(f, f"frames[{i}]") for i, f in enumerate(frames)]
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
    arr = as_rgb(image, "image")
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(path)


def save_pca(path: str | Path, fa: FeatureMap, fb: FeatureMap) -> Path:
    """Write :func:`~sdcorr.viz.pca.pca_panel` of a fused pair as a PNG (atomic); return ``path``.

    Args:
        path: output file.
        fa: ``(1, C, h, w)`` fused descriptors of A.
        fb: ``(1, C, h', w')`` fused descriptors of B.
    """
    return save_png(pca_panel(fa, fb), path)
