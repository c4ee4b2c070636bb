"""Fuse SD and DINOv2 maps into one descriptor per grid cell (SD-DINO, ``sd-dino.md`` §1.7, §3).

Per pair of images: each SD layer is reduced by a PCA fitted jointly on both images' tokens
(centred, exact SVD, deterministic signs), the layers are resampled coarse-to-fine onto one grid
and concatenated finest first (``[s3 | s4 | s5]``), the SD part and the DINO part are each
L2-normalised per cell, weighted (0.5/0.5 by default) and concatenated ``[SD | DINO]``. All of it
runs in fp32, batched over pairs, on the device of the inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .config import FusionConfig
from .errors import ConfigError
from .types import FeatureMap


def joint_pca(sets: Sequence[torch.Tensor], dims: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """PCA fitted jointly on several token sets, projected back per set (float64).

    The principal axes are the top eigenvectors of the centred union's covariance (or of its
    Gram matrix when there are fewer tokens than channels), computed exactly in float64: the
    same axes as an SVD, deterministic, and much faster than an SVD of the tall token matrix.
    Each axis is signed so that its entry of largest magnitude is positive (a deterministic
    choice among the two signs).

    Args:
        sets: token sets ``(P, N_i, C)`` (``P`` independent fits, e.g. pairs), or all ``(N_i, C)``
            for one fit; the same ``P`` and ``C`` for every set.
        dims: number of components (capped at ``min(sum N_i, C)``).

    Returns:
        One ``(P, N_i, d)`` (or ``(N_i, d)``) float64 projection per set onto the top ``d``
        axes of the centred union, and the axes ``(P, d, C)`` (or ``(d, C)``), float64.
    """
    squeeze = sets[0].ndim == 2
    x = torch.cat([t[None] if squeeze else t for t in sets], dim=1).double()
    x = x - x.mean(dim=1, keepdim=True)
    n, c = x.shape[1:]
    d = min(dims, n, c)
    if n >= c:
        _, vecs = torch.linalg.eigh(x.transpose(1, 2) @ x)  # ascending eigenvalues
        axes = vecs[..., -d:].flip(-1).transpose(1, 2)
    else:
        vals, u = torch.linalg.eigh(x @ x.transpose(1, 2))
        u, vals = u[..., -d:].flip(-1), vals[..., -d:].flip(-1)
        axes = (x.transpose(1, 2) @ u / vals.clamp_min(1e-12).sqrt()[:, None]).transpose(1, 2)
    pivot = axes.abs().argmax(dim=2, keepdim=True)
    axes = axes * torch.sign(axes.gather(2, pivot))
    proj = list((x @ axes.transpose(1, 2)).split([t.shape[-2] for t in sets], dim=1))
    if squeeze:
        return [p[0] for p in proj], axes[0]
    return proj, axes


def co_pca(
    a: torch.Tensor, b: torch.Tensor, dims: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA fitted jointly on two token sets, projected back per set (:func:`joint_pca`).

    Args:
        a: ``(P, Na, C)`` tokens of the first images (``P`` pairs; ``(Na, C)`` is one pair).
        b: ``(P, Nb, C)`` tokens of the second images.
        dims: number of components (capped at ``min(Na + Nb, C)``).

    Returns:
        ``(P, Na, d)`` and ``(P, Nb, d)`` float32 projections onto the top ``d`` principal
        axes of the centred union, and the axes ``(P, d, C)`` (float32, signed so that each
        axis's entry of largest magnitude is positive).
    """
    (pa, pb), axes = joint_pca([a, b], dims)
    return pa.float(), pb.float(), axes.float()


def _tokens(f: torch.Tensor) -> torch.Tensor:
    return f.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, hw, C)


def _untokens(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return t.transpose(1, 2).reshape(t.shape[0], -1, h, w)


def _resize(f: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(f.shape[-2:]) == tuple(size):
        return f
    return F.interpolate(f, size=size, mode="bilinear", align_corners=False)


def reduce_layers(
    sd_a: Mapping[str, torch.Tensor], sd_b: Mapping[str, torch.Tensor], cfg: FusionConfig
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Co-PCA every SD layer of a batch of pairs (identity when ``cfg.pca_dims`` is ``None``).

    Args:
        sd_a: ``{layer: (P, C, h, w)}`` of the first images.
        sd_b: ``{layer: (P, C, h, w)}`` of the second images (same grids).

    Returns:
        The reduced maps ``{layer: (P, d, h, w)}`` for A and for B (fp32).
    """
    out_a, out_b = {}, {}
    for name in cfg.sd_layers:
        fa, fb = sd_a[name].float(), sd_b[name].float()
        if cfg.pca_dims is None:
            out_a[name], out_b[name] = fa, fb
            continue
        pa, pb, _ = co_pca(_tokens(fa), _tokens(fb), cfg.pca_dims)
        out_a[name] = _untokens(pa, *fa.shape[-2:])
        out_b[name] = _untokens(pb, *fb.shape[-2:])
    return out_a, out_b


def stack_layers(
    maps: Mapping[str, torch.Tensor], cfg: FusionConfig, size: tuple[int, int]
) -> torch.Tensor:
    """Resample SD layers coarse to fine and concatenate them finest first, on grid ``size``.

    As the reference: the coarsest map is upsampled to the next grid and concatenated after
    it, and so on, each step bilinear with ``align_corners=False`` (s5 → 30, ``[s4, s5]`` → 60,
    ``[s3, s4, s5]``); the result is resampled to ``size`` if needed. Layer slices are scaled
    by ``cfg.layer_weights`` (in ``cfg.sd_layers`` order).

    Returns:
        ``(P, sum d, h, w)``.
    """
    if len(cfg.layer_weights) != len(cfg.sd_layers):
        raise ConfigError("layer_weights needs one weight per SD layer")
    weighted = {n: maps[n] * w for n, w in zip(cfg.sd_layers, cfg.layer_weights, strict=True)}
    order = sorted(weighted, key=lambda n: weighted[n].shape[-1])  # coarse -> fine
    cur = weighted[order[0]]
    for name in order[1:]:
        nxt = weighted[name]
        cur = torch.cat([nxt, _resize(cur, tuple(nxt.shape[-2:]))], dim=1)
    return _resize(cur, size)


def fuse_pair(
    sd_a: Mapping[str, FeatureMap] | None,
    sd_b: Mapping[str, FeatureMap] | None,
    dino_a: FeatureMap | None,
    dino_b: FeatureMap | None,
    cfg: FusionConfig | None = None,
) -> tuple[FeatureMap, FeatureMap]:
    """Fused descriptors of a batch of image pairs.

    Args:
        sd_a: ``{layer: FeatureMap (P, C, h, w)}`` of the first images, or ``None`` (no SD).
        sd_b: the same for the second images.
        dino_a: ``FeatureMap (P, C, H, W)`` of the first images, or ``None`` (no DINO).
        dino_b: the same for the second images.
        cfg: PCA dims, layer order and weights, branch weights.

    Returns:
        Two ``FeatureMap`` s ``(P, D, H, W)`` on the DINO grid (the finest SD grid without
        DINO); ``D = 3 * pca_dims + C_dino`` for the faithful default.
    """
    cfg = cfg or FusionConfig()
    if (sd_a is None) != (sd_b is None) or (dino_a is None) != (dino_b is None):
        raise ConfigError("both images of a pair need the same feature branches")
    if dino_a is None and sd_a is None:
        raise ConfigError("fusion needs SD features, DINO features, or both")
    ref_a = dino_a if dino_a is not None else _finest(sd_a)
    ref_b = dino_b if dino_b is not None else _finest(sd_b)
    parts_a: list[torch.Tensor] = []
    parts_b: list[torch.Tensor] = []
    if sd_a is not None and sd_b is not None:
        ra, rb = reduce_layers(
            {n: m.features for n, m in sd_a.items()}, {n: m.features for n, m in sd_b.items()}, cfg
        )
        size = tuple(ref_a.features.shape[-2:])
        parts_a.append(F.normalize(stack_layers(ra, cfg, size), dim=1) * cfg.sd_weight)
        parts_b.append(F.normalize(stack_layers(rb, cfg, size), dim=1) * cfg.sd_weight)
    if dino_a is not None and dino_b is not None:
        parts_a.append(F.normalize(dino_a.features.float(), dim=1) * cfg.dino_weight)
        parts_b.append(F.normalize(dino_b.features.float(), dim=1) * cfg.dino_weight)
    return (
        FeatureMap(torch.cat(parts_a, 1), ref_a.geometry),
        FeatureMap(torch.cat(parts_b, 1), ref_b.geometry),
    )


def _finest(maps: Mapping[str, FeatureMap]) -> FeatureMap:
    return max(maps.values(), key=lambda m: m.features.shape[-1])
