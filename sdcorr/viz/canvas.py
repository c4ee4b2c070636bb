"""Pictures as ``(H, W, 3)`` uint8 arrays: input checks, resizing and the one A | B canvas.

Every viz function takes PIL images or uint8 arrays (or uint8 tensors) and goes through
:func:`as_rgb`; every picture of two images side by side goes through :func:`side_by_side`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

ImageInput = Image.Image | np.ndarray
ArrayLike = np.ndarray | torch.Tensor
WHITE = 255
BLACK = 0


def as_rgb(img: ImageInput, name: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 view of a PIL image or uint8 array (or uint8 tensor).

    Raises:
        ValueError: anything else, naming ``name`` and the shape and dtype it got.
    """
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


def as_pil(img: ImageInput, name: str) -> Image.Image:
    """An RGB PIL image of ``img`` (checked as :func:`as_rgb` when it is not PIL)."""
    if isinstance(img, Image.Image):
        return img if img.mode == "RGB" else img.convert("RGB")
    return Image.fromarray(as_rgb(img, name))


def as_numpy(x: ArrayLike) -> np.ndarray:
    """A numpy array of a tensor (detached, on the CPU) or array-like."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, 3)`` uint8 to ``size = (w, h)`` with LANCZOS."""
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


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
