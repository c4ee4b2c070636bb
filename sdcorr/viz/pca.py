"""PCA colours of feature maps: the same part gets the same colour in every image.

One PCA (the fusion's own :func:`sdcorr.fusion.joint_pca`) is fitted over the cells of all the
given maps together and its three components become RGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..fusion import joint_pca
from ..types import FeatureMap
from .canvas import BLACK, ArrayLike, as_numpy, side_by_side


def _feature_list(features: object) -> list[torch.Tensor]:
    """The ``(B, C, h, w)`` fp32 CPU tensors of a map, a tensor or a list of them (same ``C``)."""
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
        m = torch.as_tensor(as_numpy(m)).bool()
        m = m.unsqueeze(0) if m.ndim == 2 else m
        if tuple(m.shape) != want:
            raise ValueError(
                f"mask[{i}]: expected shape {want} or {want[1:]}, got {tuple(m.shape)}"
            )
        out.append(m)
    return out


def _to_uint8(proj: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` components min-max scaled per column to ``[0, 255]`` uint8."""
    lo, span = proj.min(0).values, proj.max(0).values - proj.min(0).values
    return ((proj - lo) / torch.where(span > 0, span, 1.0) * 255).round().to(torch.uint8)


def pca_rgb(
    features: FeatureMap | torch.Tensor | Sequence[FeatureMap | torch.Tensor],
    mask: ArrayLike | Sequence[ArrayLike | None] | None = None,
) -> list[np.ndarray]:
    """Colour feature maps by a joint PCA to three components (same part, same colour).

    One PCA is fitted over the (masked) cells of all given maps together, by the fusion's own
    :func:`sdcorr.fusion.joint_pca`: the data are centred, the top three principal axes are taken
    (``eigh``, float64), and each axis's sign is fixed so that its largest-magnitude entry is
    positive (deterministic). Each component is min-max scaled to ``[0, 255]`` over all fitted
    cells, so colours are comparable across images.

    Args:
        features: a :class:`FeatureMap` or ``(B, C, h, w)`` tensor, or a list of them (same ``C``;
            grids may differ).
        mask: optional bool mask per map, ``(B, h, w)`` or ``(h, w)`` when ``B == 1`` (a list with
            one entry or None per map). Cells outside are left out of the fit and drawn black.

    Returns:
        One ``(h, w, 3)`` uint8 image per batch element, maps in order, then batch order.
    """
    maps = _feature_list(features)
    keep = [m.reshape(-1) for m in _mask_list(mask, maps)]
    if not any(k.any() for k in keep):
        raise ValueError("pca_rgb: the mask selects no cells")
    rows = [f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]) for f in maps]
    projs, _ = joint_pca([r[k] for r, k in zip(rows, keep, strict=True)], 3)
    proj = torch.zeros(sum(len(p) for p in projs), 3, dtype=torch.float64)
    proj[:, : projs[0].shape[1]] = torch.cat(projs)  # fewer than 3 components: black channels
    scaled = _to_uint8(proj)
    out, start = [], 0
    for f, k in zip(maps, keep, strict=True):
        n = int(k.sum())
        img = torch.zeros(k.shape[0], 3, dtype=torch.uint8)
        img[k] = scaled[start : start + n]
        start += n
        out.extend(img.reshape(f.shape[0], *f.shape[-2:], 3).numpy())
    return out


def pca_images(fa: FeatureMap, fb: FeatureMap) -> tuple[np.ndarray, np.ndarray]:
    """Joint PCA colours of a fused pair, at each image's original size.

    One PCA (:func:`pca_rgb`) is fitted on the content cells of both maps (padding cells are
    left out), so the same part gets the same colour in both images; each pixel takes its cell's
    colour (:meth:`~sdcorr.image.Geometry.grid_to_pixels`).

    Args:
        fa: ``(1, C, h, w)`` fused descriptors of A.
        fb: ``(1, C, h', w')`` fused descriptors of B.

    Returns:
        ``(Ha, Wa, 3)`` and ``(Hb, Wb, 3)`` uint8.
    """
    ga, gb = fa.geometry[0], fb.geometry[0]
    rgb_a, rgb_b = pca_rgb([fa, fb], mask=[ga.content_mask(), gb.content_mask()])
    return ga.grid_to_pixels(rgb_a).numpy(), gb.grid_to_pixels(rgb_b).numpy()


def pca_panel(fa: FeatureMap, fb: FeatureMap) -> np.ndarray:
    """Both images side by side in joint PCA colours (:func:`pca_images`), black below the
    shorter one: ``(max(Ha, Hb), Wa + Wb, 3)`` uint8."""
    return side_by_side(*pca_images(fa, fb), fill=BLACK)
