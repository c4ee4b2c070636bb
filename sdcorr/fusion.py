"""Fuse SD and DINOv2 maps into one descriptor per grid cell (SD-DINO, ``sd-dino.md`` §1.7, §3).

Per pair of images: each SD layer is reduced by a PCA fitted jointly on both images' tokens
(centred, exact SVD, deterministic signs), the layers are resampled coarse-to-fine onto one grid
and concatenated finest first (``[s3 | s4 | s5]``), the SD part and the DINO part are each
L2-normalised per cell, weighted (0.5/0.5 by default) and concatenated ``[SD | DINO]``. All of it
runs in fp32, batched over pairs, on the device of the inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .config import FusionConfig
from .errors import ConfigError
from .types import FeatureMap


def co_pca(
    a: torch.Tensor, b: torch.Tensor, dims: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA fitted jointly on two token sets, projected back per set.

    Args:
        a: ``(P, Na, C)`` tokens of the first images (``P`` pairs; ``(Na, C)`` is one pair).
        b: ``(P, Nb, C)`` tokens of the second images.
        dims: number of components (capped at ``min(Na + Nb, C)``).

    Returns:
        ``(P, Na, d)`` and ``(P, Nb, d)`` projections onto the top ``d`` principal axes of the
        centred union, and the axes ``(P, d, C)``. Each axis is signed so that its entry of
        largest magnitude is positive (a deterministic choice among the two SVD signs).
    """
    squeeze = a.ndim == 2
    if squeeze:
        a, b = a[None], b[None]
    x = torch.cat([a, b], dim=1).float()
    x = x - x.mean(dim=1, keepdim=True)
    d = min(dims, x.shape[1], x.shape[2])
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:, :d]
    pivot = axes.abs().argmax(dim=2, keepdim=True)
    axes = axes * torch.sign(axes.gather(2, pivot))
    proj = x @ axes.transpose(1, 2)
    pa, pb = proj[:, : a.shape[1]], proj[:, a.shape[1] :]
    if squeeze:
        return pa[0], pb[0], axes[0]
    return pa, pb, axes


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
