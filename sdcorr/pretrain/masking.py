"""Block-wise iBOT masks (the BEiT/DINOv2 ``MaskingGenerator``) and the per-batch mask policy.

A mask is a ``(h, w)`` boolean grid over the patch tokens (CLS not included). Rectangles with a
log-uniform aspect ratio are added until the requested number of patches is masked; a block
counts only if it adds new patches, and each block gets 10 placement attempts, so the achieved
count may fall short of the request (as in the reference).
"""

from __future__ import annotations

import math

import numpy as np


def block_mask(
    grid: tuple[int, int],
    num_patches: int,
    rng: np.random.Generator,
    min_patches: int = 4,
    max_patches: int | None = None,
    max_aspect: float = 1 / 0.3,
    attempts: int = 10,
) -> np.ndarray:
    """One block-wise mask with about ``num_patches`` masked cells.

    Args:
        grid: ``(h, w)`` patch grid.
        num_patches: number of cells to mask (at most ``h * w``).
        rng: numpy random generator.
        min_patches: smallest block area.
        max_patches: largest block area (default ``num_patches``).
        max_aspect: block aspect ratio is log-uniform in ``[1/max_aspect, max_aspect]``.
        attempts: placement attempts per block.

    Returns:
        ``(h, w)`` bool array.
    """
    h, w = grid
    mask = np.zeros((h, w), dtype=bool)
    max_patches = num_patches if max_patches is None else max_patches
    log_aspect = (math.log(1 / max_aspect), math.log(max_aspect))
    count = 0
    while count < num_patches:
        limit = min(num_patches - count, max_patches)
        delta = _add_block(mask, limit, rng, min_patches, log_aspect, attempts)
        if delta == 0:
            break
        count += delta
    return mask


def _add_block(
    mask: np.ndarray,
    limit: int,
    rng: np.random.Generator,
    min_patches: int,
    log_aspect: tuple[float, float],
    attempts: int,
) -> int:
    """Try to mask one rectangle adding between 1 and ``limit`` new cells; return how many."""
    h, w = mask.shape
    for _ in range(attempts):
        area = rng.uniform(min(min_patches, limit), max(min_patches, limit))
        aspect = math.exp(rng.uniform(*log_aspect))
        bh = round(math.sqrt(area * aspect))
        bw = round(math.sqrt(area / aspect))
        if 0 < bw < w and 0 < bh < h:
            top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            block = mask[top : top + bh, left : left + bw]
            new = int(bh * bw - block.sum())
            if 0 < new <= limit:
                block[...] = True
                return new
    return 0


def batch_masks(
    n_crops: int,
    grid: tuple[int, int],
    rng: np.random.Generator,
    ratio: tuple[float, float] = (0.1, 0.5),
    probability: float = 0.5,
    min_patches: int = 4,
    max_aspect: float = 1 / 0.3,
) -> np.ndarray:
    """Masks for ``n_crops`` global crops: ``int(n_crops * probability)`` masked, rest empty.

    The ratios are stratified: masked crop ``i`` draws its ratio uniformly in bin ``i`` of
    ``linspace(ratio[0], ratio[1], n_masked + 1)``; the list is then shuffled. The block size is
    capped at half the grid (the reference ``max_num_patches = 0.5 * N``).

    Returns:
        ``(n_crops, h * w)`` bool array.
    """
    n = grid[0] * grid[1]
    n_masked = int(n_crops * probability)
    edges = np.linspace(ratio[0], ratio[1], n_masked + 1)
    masks = []
    for i in range(n_masked):
        r = rng.uniform(edges[i], edges[i + 1])
        m = block_mask(grid, int(n * r), rng, min_patches, int(0.5 * n), max_aspect)
        masks.append(m.reshape(-1))
    masks += [np.zeros(n, dtype=bool)] * (n_crops - n_masked)
    order = rng.permutation(n_crops)
    return np.stack([masks[i] for i in order]) if n_crops else np.zeros((0, n), dtype=bool)
