"""One image pair ready to match: fused maps, resolved masks and the flip-alignment decision.

:func:`build_pair` is the only place that reads ``MatchConfig.flip_align``: it fuses (A, B),
resolves ``"auto"`` masks from the raw features, and with flip alignment also fuses
(mirror(A), B) and keeps whichever source view is closer to B (:mod:`sdcorr.flip`). The
resulting :class:`FusedPair` carries the match settings it was built with, so
:func:`transfer` (keypoints) and :func:`dense_flow` (B → A flow) on the same pair agree, and a
caller that needs both builds the pair, its masks and its flip decision once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from .cache import ImageFeatures
from .config import MatchConfig
from .flip import FlipDecision, as_mask, decide, mirror_mask, mirror_points
from .match.dense import DenseFlow, match_dense
from .match.sparse import transfer_points
from .types import FeatureMap, Matches

MaskLike = np.ndarray | torch.Tensor | str | None  # an (H, W) bool mask, "auto" or None
Mask = np.ndarray | torch.Tensor | None
Fuse = Callable[[ImageFeatures, ImageFeatures], tuple[FeatureMap, FeatureMap]]


@dataclass(frozen=True)
class FusedPair:
    """Fused maps and masks of the source view that is matched (A, or its mirror).

    Attributes:
        fa: ``(1, D, h, w)`` fused map of the source view used.
        fb: ``(1, D, h', w')`` fused map of B (paired with ``fa``).
        mask_a: ``(Ha, Wa)`` bool mask of the source view used, or ``None``.
        mask_b: ``(Hb, Wb)`` bool mask of B, or ``None``.
        match: the matching settings the pair was built with.
        decision: the flip-alignment decision (``None`` without flip alignment).
        plain: ``(fa, fb)`` of A itself and B (the same as ``(fa, fb)`` unless flipped).
    """

    fa: FeatureMap
    fb: FeatureMap
    mask_a: Mask
    mask_b: Mask
    match: MatchConfig
    decision: FlipDecision | None = None
    plain: tuple[FeatureMap, FeatureMap] | None = None

    @property
    def flipped(self) -> bool:
        """Whether A's mirror is the source view (it matched B better)."""
        return self.decision is not None and self.decision.flipped

    def unflipped(self) -> tuple[FeatureMap, FeatureMap]:
        """Fused ``(A, B)`` maps, whichever view is matched (e.g. for PCA colours)."""
        return self.plain if self.plain is not None else (self.fa, self.fb)


def mask_source(feats: ImageFeatures, sd_layers: Sequence[str]) -> FeatureMap:
    """The map automatic masks are computed from: DINO tokens, else the finest SD layer."""
    if "dino" in feats.maps:
        return feats.maps["dino"]
    sd = feats.sd() or {}
    order = [k for k in sd_layers if k in sd] or sorted(sd)
    return sd[order[0]]


def resolve_mask(mask: MaskLike, feats: ImageFeatures, sd_layers: Sequence[str]) -> Mask:
    """An ``(H, W)`` bool mask: ``"auto"`` is computed from ``feats`` (:mod:`sdcorr.masks`)."""
    if isinstance(mask, str):
        if mask != "auto":
            raise ValueError(f"mask must be an (H, W) array, 'auto' or None, got {mask!r}")
        from .masks import foreground_mask

        return foreground_mask(mask_source(feats, sd_layers))
    return as_mask(mask)


def build_pair(
    fuse: Fuse,
    ra: ImageFeatures,
    rb: ImageFeatures,
    mirror: Callable[[], ImageFeatures | None],
    masks: tuple[MaskLike, MaskLike],
    match: MatchConfig,
    sd_layers: Sequence[str],
) -> FusedPair:
    """Fuse (A, B) and, with ``match.flip_align``, (mirror(A), B); keep the closer view.

    Args:
        fuse: ``fuse(raw_a, raw_b) -> (fa, fb)`` (the pipeline's per-pair fusion).
        ra: raw features of A.
        rb: raw features of B.
        mirror: returns the raw features of A's mirror (called only with flip alignment;
            ``None`` there is an error).
        masks: ``(mask_a, mask_b)``, each ``(H, W)`` bool, ``"auto"`` or ``None``.
        match: the matching settings (``flip_align`` is read here, and only here).
        sd_layers: SD layer order (for automatic masks without a DINO branch).
    """
    ma = resolve_mask(masks[0], ra, sd_layers)
    mb = resolve_mask(masks[1], rb, sd_layers)
    fa, fb = fuse(ra, rb)
    pair = FusedPair(fa, fb, ma, mb, match)
    if not match.flip_align:
        return pair
    rm = mirror()
    if rm is None:
        raise ValueError("flip alignment needs the raw features of A's mirror")
    mm = resolve_mask(masks[0], rm, sd_layers) if isinstance(masks[0], str) else mirror_mask(ma)
    fm, fbm = fuse(rm, rb)
    decision = decide(fa, fb, fm, fbm, ma, mb, mm)
    if decision.flipped:
        return FusedPair(fm, fbm, mm, mb, match, decision, plain=(fa, fb))
    return replace(pair, decision=decision)


def transfer(pair: FusedPair, points_a: torch.Tensor | np.ndarray | list) -> Matches:
    """Transfer ``points_a (K, 2)`` ``(x, y)`` of A to B; from the mirror when the pair is
    flipped (``Matches.points_a`` stays A's own points, ``Matches.flipped`` says so)."""
    if not pair.flipped:
        return transfer_points(pair.fa, pair.fb, points_a, pair.match, pair.mask_a, pair.mask_b)
    geo = pair.fa.geometry[0]  # the mirror's: same size as A
    pts = geo.check_inside(points_a, "points of A")
    m = transfer_points(pair.fa, pair.fb, mirror_points(pts, geo.width), pair.match,
                        pair.mask_a, pair.mask_b)  # fmt: skip
    return replace(m, points_a=pts.float(), flipped=True)


def dense_flow(pair: FusedPair, grid: int | None = None) -> DenseFlow:
    """Dense B → A flow of the pair on a ``grid``-cell grid (``None``: native); into A's own
    grid even when the pair is flipped."""
    flow = match_dense(pair.fa, pair.fb, grid, pair.match, pair.mask_a, pair.mask_b)
    return unmirror_flow(flow) if pair.flipped else flow


def unmirror_flow(flow: DenseFlow) -> DenseFlow:
    """A flow into mirror(A)'s grid → the same flow into A's grid (fractional cells; A and its
    mirror share size, frame and grid, so ``geometry_a`` is unchanged)."""
    ga = flow.geometry_a
    h, w, _ = flow.cells_a.shape
    px = mirror_points(flow.points_a().reshape(-1, 2), ga.width)
    frame = ga.to_frame(px)
    cells = (frame - (ga.cell - 1) / 2) / ga.stride
    return replace(flow, cells_a=cells.float().view(h, w, 2))
