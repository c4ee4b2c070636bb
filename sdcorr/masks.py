"""Automatic foreground masks from features already computed (no extra model).

The first principal component of a ViT's patch tokens separates the main object from the
background on most object-centric photos (DINOv2 paper, Fig. 1; SD-DINO uses an ODISE model,
GeoAware-SC a box-prompted SAM for the same job). :func:`foreground_grid`:

1. takes the tokens of the cells that overlap the image (not the padding), centred;
2. projects them on their first principal component (eigenvector of the covariance, so the
   result is deterministic);
3. picks the sign so that the cells on the image border are mostly negative (background);
4. thresholds at zero and keeps the connected component(s) that do not mostly lie on the border,
   filling holes (``scipy.ndimage``).

:func:`foreground_mask` lifts the grid mask to the original pixels (each pixel takes its cell).
"""

from __future__ import annotations

import numpy as np
import torch

from .image import Geometry
from .types import FeatureMap


def first_component(fm: FeatureMap) -> torch.Tensor:
    """``(h, w)`` float32 projection of each content cell on the first principal component
    (padding cells are ``nan``); sign chosen so the image border is mostly negative.

    Args:
        fm: ``(1, C, h, w)`` features of one image.
    """
    geo = fm.geometry[0]
    content = geo.content_mask()
    h, w = content.shape
    x = fm.features[0].detach().float().cpu().flatten(1).t()[content.flatten()]  # (N, C)
    x = x - x.mean(dim=0, keepdim=True)
    cov = x.t().double() @ x.double() / max(len(x) - 1, 1)
    _, vecs = torch.linalg.eigh(cov)
    score = (x.double() @ vecs[:, -1]).float()
    out = torch.full((h, w), float("nan"))
    out[content] = score
    border = _content_border(content)
    if (out[border] > 0).float().mean() > 0.5:
        out = -out
    return out


def _content_border(content: torch.Tensor) -> torch.Tensor:
    """``(h, w)`` bool: the outermost ring of the content cells."""
    rows = content.any(dim=1).nonzero().flatten()
    cols = content.any(dim=0).nonzero().flatten()
    ring = torch.zeros_like(content)
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    ring[[r0, r1], c0 : c1 + 1] = True
    ring[r0 : r1 + 1, [c0, c1]] = True
    return ring & content


def foreground_grid(fm: FeatureMap) -> torch.Tensor:
    """``(h, w)`` bool foreground of one image's feature grid (see the module docstring)."""
    from scipy import ndimage

    score = first_component(fm)
    fg = (score > 0).numpy()  # nan (padding) compares False
    border = _content_border(fm.geometry[0].content_mask()).numpy()
    labels, n = ndimage.label(fg)
    keep = np.zeros_like(fg)
    sizes = ndimage.sum(fg, labels, range(1, n + 1)) if n else []
    for i, size in enumerate(sizes, start=1):
        comp = labels == i
        on_border = (comp & border).sum()
        if on_border <= 0.5 * size:  # mostly interior: an object, not a background stripe
            keep |= comp
    if not keep.any() and n:  # everything touches the border: keep the largest component
        keep = labels == (int(np.argmax(sizes)) + 1)
    keep = ndimage.binary_fill_holes(keep)
    return torch.from_numpy(keep) & fm.geometry[0].content_mask()


def grid_to_pixels(grid_mask: torch.Tensor, geo: Geometry) -> np.ndarray:
    """Lift an ``(h, w)`` bool grid mask to ``(H, W)`` bool original pixels (nearest cell)."""
    ys, xs = torch.meshgrid(
        torch.arange(geo.height, dtype=torch.float64),
        torch.arange(geo.width, dtype=torch.float64),
        indexing="ij",
    )
    cells = geo.to_cell(torch.stack([xs.flatten(), ys.flatten()], dim=1))
    return grid_mask[cells[:, 1], cells[:, 0]].view(geo.height, geo.width).numpy().copy()


def foreground_mask(fm: FeatureMap) -> np.ndarray:
    """``(H, W)`` bool foreground mask of one image from its ``(1, C, h, w)`` features."""
    return grid_to_pixels(foreground_grid(fm), fm.geometry[0])
