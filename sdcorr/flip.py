"""Adaptive pose alignment (GeoAware-SC ``ADAPT_FLIP``): match from A or from A's mirror.

Semantic features confuse left and right: a dog facing left and a dog facing right match
badly. GeoAware-SC extracts features of the source and of its horizontal mirror, measures how
far each is from the target ("instance matching distance") and transfers the keypoints from
whichever is closer. Here:

* **with masks of A and B** (given, or :func:`sdcorr.masks.foreground_mask`): GeoAware-SC's
  ``get_distance``: unit-norm fused descriptors bilinearly resized to a 64x64 grid; for each
  cell inside A's mask the L2 distance to its nearest cell inside B's mask; the mean.
* **without masks**: GeoAware-SC's mask-free alternative (``--MUTUAL_NN``,
  ``get_distance_mutual_nn``): the mean nearest-neighbour L2 distance over the mutual nearest
  neighbours of the two native grids, restricted here to cells that overlap the images (not the
  padding, which is identical black in both).

The mirror wins only when its distance is strictly lower. A point ``(x, y)`` of A sits at
``(W - 1 - x, y)`` in the mirror (pixel centres at integers); the match found from there is
reported for the original point. GeoAware-SC additionally renames SPair's left/right keypoint
ids after flipping (its ``SPAIR_FLIP`` tables); points given by position alone have no id, so
a left ear of A is matched to whatever looks like it in the mirror (B's right ear when B faces
like the mirror), the geometrically consistent answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .image import ImageLike, load_image
from .match.dense import resample
from .match.sparse import nearest, rows, unit, valid_cells
from .types import FeatureMap

DISTANCE_GRID = 64  # GeoAware-SC's RESOLUTION in get_distance
L2_CHUNK = 1024  # query rows per distance block
Mask = np.ndarray | torch.Tensor | None


@dataclass(frozen=True)
class FlipDecision:
    """Which source view matches the target better.

    Attributes:
        flipped: the mirror of A is closer to B (``distance_flipped < distance``).
        distance: instance matching distance of A to B.
        distance_flipped: instance matching distance of mirror(A) to B.
        masked: the distances used masks (else the mutual-nearest-neighbour criterion).
    """

    flipped: bool
    distance: float
    distance_flipped: float
    masked: bool


def mirror_image(image: ImageLike) -> Image.Image:
    """The horizontal mirror of an image (RGB PIL)."""
    return load_image(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def mirror_points(points: torch.Tensor, width: int) -> torch.Tensor:
    """``(K, 2)`` ``(x, y)`` of an image ``width`` wide → the same points in its mirror."""
    p = torch.as_tensor(points, dtype=torch.float64).clone()
    p[:, 0] = (width - 1) - p[:, 0]
    return p


def mirror_mask(mask: Mask) -> Mask:
    """The horizontal mirror of an ``(H, W)`` mask (``None`` stays ``None``)."""
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        return mask.flip(-1)
    return np.ascontiguousarray(np.asarray(mask)[:, ::-1])


def as_mask(mask: Mask) -> Mask:
    """A contiguous bool copy of a numpy mask (negative strides, e.g. ``m[:, ::-1]``, are not
    accepted by torch); tensors and ``None`` pass through."""
    if mask is None or isinstance(mask, torch.Tensor):
        return mask
    return np.ascontiguousarray(np.asarray(mask, dtype=bool))


def masked_distance(fa: FeatureMap, fb: FeatureMap, mask_a: Mask, mask_b: Mask) -> float:
    """GeoAware-SC's ``get_distance``: mean over A's mask of the L2 distance to B's mask.

    Args:
        fa: ``(1, C, h, w)`` fused descriptors of A (normalised here, then resized to 64x64).
        fb: ``(1, C, h', w')`` fused descriptors of B.
        mask_a: ``(Ha, Wa)`` bool mask of A.
        mask_b: ``(Hb, Wb)`` bool mask of B.
    """
    ra, rb = resample(unit(fa), DISTANCE_GRID), resample(unit(fb), DISTANCE_GRID)
    va = valid_cells(ra, as_mask(mask_a), True)
    vb = valid_cells(rb, as_mask(mask_b), True)
    if not va.any() or not vb.any():
        return float("inf")
    qa, qb = rows(ra)[va.to(ra.features.device)], rows(rb)[vb.to(rb.features.device)]
    _, d = nearest(qa, qb, chunk=L2_CHUNK, metric="l2")
    return float(d.mean())


def mutual_nn_distance(fa: FeatureMap, fb: FeatureMap) -> float:
    """GeoAware-SC's ``get_distance_mutual_nn`` on the cells that overlap the images.

    Args:
        fa: ``(1, C, h, w)`` fused descriptors of A (unit-normalised here).
        fb: ``(1, C, h', w')`` fused descriptors of B.

    Returns:
        Mean L2 distance over the mutual nearest neighbours (``inf`` when there are none).
    """
    ua, ub = unit(fa), unit(fb)
    va = valid_cells(ua, None, True)
    vb = valid_cells(ub, None, True)
    qa, qb = rows(ua)[va.to(ua.features.device)], rows(ub)[vb.to(ub.features.device)]
    j_ab, d_ab = nearest(qa, qb, chunk=L2_CHUNK, metric="l2")
    j_ba, _ = nearest(qb, qa, chunk=L2_CHUNK, metric="l2")
    mutual = j_ba[j_ab] == torch.arange(len(qa), device=j_ab.device)
    return float(d_ab[mutual].mean()) if mutual.any() else float("inf")


def instance_distance(fa: FeatureMap, fb: FeatureMap, mask_a: Mask, mask_b: Mask) -> float:
    """Masked distance when both masks are given, else the mutual-NN distance."""
    if mask_a is not None and mask_b is not None:
        return masked_distance(fa, fb, mask_a, mask_b)
    return mutual_nn_distance(fa, fb)


def decide(
    fa: FeatureMap,
    fb: FeatureMap,
    fa_mirror: FeatureMap,
    fb_mirror: FeatureMap,
    mask_a: Mask = None,
    mask_b: Mask = None,
    mask_a_mirror: Mask = None,
) -> FlipDecision:
    """Compare A and mirror(A) against B.

    Args:
        fa: fused descriptors of A (paired with ``fb``).
        fb: fused descriptors of B in the (A, B) pair.
        fa_mirror: fused descriptors of mirror(A) (paired with ``fb_mirror``).
        fb_mirror: fused descriptors of B in the (mirror(A), B) pair (differs from ``fb`` only
            when the fusion fits a per-pair PCA).
        mask_a: ``(Ha, Wa)`` bool mask of A, or ``None``.
        mask_b: ``(Hb, Wb)`` bool mask of B, or ``None``.
        mask_a_mirror: mask of mirror(A) (default: ``mask_a`` mirrored).
    """
    if mask_a is not None and mask_a_mirror is None:
        mask_a_mirror = mirror_mask(mask_a)
    masked = mask_a is not None and mask_b is not None
    d = instance_distance(fa, fb, mask_a, mask_b)
    d_flip = instance_distance(fa_mirror, fb_mirror, mask_a_mirror, mask_b)
    return FlipDecision(bool(d_flip < d), d, d_flip, masked)
