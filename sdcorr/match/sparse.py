"""Sparse keypoint transfer by cosine nearest neighbour on feature grids.

A point of A → the grid cell containing it → its descriptor → the most similar valid cell of B
(cosine, fp32, chunked) → that cell's centre → B's original pixels. Options: a mutual
nearest-neighbour check, a windowed soft-argmax for sub-cell precision (GeoAware-SC: window of
``2 * window + 1`` cells, temperature ``beta``; positions outside the window get zero weight),
and masks restricting the candidate cells of either image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import MatchConfig
from ..errors import PointsError
from ..types import FeatureMap, Matches


def unit(fm: FeatureMap) -> FeatureMap:
    """``fm`` in fp32 with every cell's descriptor L2-normalised: ``(B, C, h, w)``, same geometry."""
    return FeatureMap(F.normalize(fm.features.float(), dim=1), fm.geometry)


def _single(fm: FeatureMap) -> torch.Tensor:
    """The ``(C, h, w)`` features of a map of one image."""
    if fm.features.shape[0] != 1:
        raise ValueError(f"expected one image, got a batch of {fm.features.shape[0]}")
    return fm.features[0]


def rows(fm: FeatureMap) -> torch.Tensor:
    """``(1, C, h, w)`` map → its ``(h * w, C)`` descriptors as they are, row-major cells."""
    return _single(fm).flatten(1).t()


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """``(C, h, w)`` descriptors of one image → ``(h * w, C)`` unit-norm fp32, row-major cells."""
    return F.normalize(features.float().flatten(1).t(), dim=1)


def descriptors(fm: FeatureMap) -> torch.Tensor:
    """``(1, C, h, w)`` map → ``(h * w, C)`` unit-norm fp32 descriptors, row-major cells."""
    return unit_rows(_single(fm))


def valid_cells(
    fm: FeatureMap, mask: torch.Tensor | np.ndarray | None, content_only: bool
) -> torch.Tensor | None:
    """``(h * w,)`` bool of candidate cells, or ``None`` when every cell is a candidate."""
    geo = fm.geometry[0]
    if mask is not None:
        return geo.mask_to_grid(mask).flatten()
    return geo.content_mask().flatten() if content_only else None


def similarity(query: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """``(K, N)`` fp32 cosine similarities of unit-norm ``query (K, C)`` and ``bank (N, C)``."""
    return query.float() @ bank.float().t()


def nearest(
    query: torch.Tensor,
    bank: torch.Tensor,
    valid: torch.Tensor | None = None,
    chunk: int = 4096,
    metric: str = "cosine",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest neighbour of each query row in ``bank``, ``chunk`` query rows at a time.

    Args:
        query: ``(K, C)`` descriptors (unit-norm for ``"cosine"``).
        bank: ``(N, C)`` descriptors.
        valid: ``(N,)`` bool; invalid rows are never chosen.
        chunk: query rows per ``(chunk, N)`` block.
        metric: ``"cosine"`` (:func:`similarity`, highest wins) or ``"l2"`` (Euclidean
            distance, lowest wins). Ties go to the first bank row.

    Returns:
        ``idx (K,)`` int64 and ``score (K,)`` float32: the cosine similarity, or the distance.
    """
    if metric not in ("cosine", "l2"):
        raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
    bank = bank.to(query.device).float()
    worst = float("-inf") if metric == "cosine" else float("inf")
    idx, score = [], []
    for i in range(0, query.shape[0], chunk):
        q = query[i : i + chunk].float()
        s = similarity(q, bank) if metric == "cosine" else torch.cdist(q, bank)
        if valid is not None:
            s = s.masked_fill(~valid.to(s.device)[None], worst)
        best, j = s.max(dim=1) if metric == "cosine" else s.min(dim=1)
        idx.append(j)
        score.append(best)
    if not idx:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return torch.cat(idx), torch.cat(score)


def point_similarity(fa: FeatureMap, fb: FeatureMap, point: tuple[float, float]) -> torch.Tensor:
    """Cosine similarity of A's cell at ``point`` with every cell of B.

    Args:
        fa: ``(1, C, h, w)`` descriptors of A.
        fb: ``(1, C, h', w')`` descriptors of B.
        point: ``(x, y)`` in A's original pixels (must lie on A).

    Returns:
        ``(h', w')`` fp32 on the CPU; its value at a match of :func:`transfer_points` is that
        match's score.
    """
    ga = fa.geometry[0]
    col, row = ga.to_cell(ga.check_inside([list(point)], "point of A"))[0].tolist()
    query = descriptors(fa)[row * ga.grid[1] + col]
    return similarity(query[None], descriptors(fb))[0].view(fb.geometry[0].grid).cpu()


def soft_argmax(
    query: torch.Tensor,
    bank: torch.Tensor,
    grid: tuple[int, int],
    hard: torch.Tensor,
    window: int,
    beta: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Windowed soft-argmax refinement of hard matches (GeoAware-SC).

    Args:
        query: ``(K, C)`` unit-norm descriptors.
        bank: ``(h * w, C)`` unit-norm descriptors of the target grid.
        grid: ``(h, w)`` of the target grid.
        hard: ``(K,)`` flat index of each query's hard nearest neighbour.
        window: half-size of the window in cells.
        beta: softmax temperature on cosine similarities.
        valid: ``(h * w,)`` bool of candidate cells.

    Returns:
        ``(K, 2)`` fractional ``(col, row)`` expected positions inside the window.
    """
    h, w = grid
    k = query.shape[0]
    offs = torch.arange(-window, window + 1, device=query.device)
    dy, dx = torch.meshgrid(offs, offs, indexing="ij")
    rows = (hard // w)[:, None] + dy.flatten()[None]  # (K, S)
    cols = (hard % w)[:, None] + dx.flatten()[None]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).long()
    sim = torch.einsum("kc,ksc->ks", query.float(), bank.float()[flat])
    keep = inside if valid is None else inside & valid.to(query.device)[flat]
    weights = torch.softmax((sim / beta).masked_fill(~keep, float("-inf")), dim=1)
    pos = torch.stack([cols, rows], dim=2).float()  # (K, S, 2)
    return (weights[..., None] * pos).sum(dim=1).view(k, 2)


def transfer_points(
    fa: FeatureMap,
    fb: FeatureMap,
    points_a: torch.Tensor | np.ndarray | list,
    config: MatchConfig | None = None,
    mask_a: torch.Tensor | np.ndarray | None = None,
    mask_b: torch.Tensor | np.ndarray | None = None,
) -> Matches:
    """Transfer points of image A to image B.

    Args:
        fa: ``(1, C, h, w)`` descriptors of A.
        fb: ``(1, C, h', w')`` descriptors of B.
        points_a: ``(K, 2)`` ``(x, y)`` in A's original pixels (must lie on A).
        config: mutual check, soft-argmax, candidate restriction, chunk size.
        mask_a: optional ``(Ha, Wa)`` bool mask of A (used by the mutual check).
        mask_b: optional ``(Hb, Wb)`` bool mask of B: only cells inside it are candidates.

    Returns:
        ``Matches`` with ``points_b (K, 2)`` in B's original pixels, cosine ``scores (K,)`` and
        ``mutual (K,)`` (all ``True`` unless ``config.mutual``).

    Raises:
        PointsError: malformed points or points off image A.
    """
    cfg = config or MatchConfig()
    ga, gb = fa.geometry[0], fb.geometry[0]
    pts = ga.check_inside(points_a, "points of A")
    da, db = descriptors(fa), descriptors(fb)
    cells = ga.to_cell(pts)
    qa = cells[:, 1] * ga.grid[1] + cells[:, 0]
    query = da[qa.to(da.device)]
    valid_b = valid_cells(fb, mask_b, cfg.content_only)
    if valid_b is not None and not valid_b.any():
        raise PointsError("the mask of B selects no feature cell")
    idx, score = nearest(query, db, valid_b, cfg.chunk)
    mutual = torch.ones(len(idx), dtype=torch.bool)
    if cfg.mutual and len(idx):
        back, _ = nearest(db[idx], da, valid_cells(fa, mask_a, cfg.content_only), cfg.chunk)
        mutual = (back.cpu() == qa).cpu()
    if cfg.soft_argmax and len(idx):
        step = 256  # bounds the (step, window², C) gather
        pos = torch.cat([
            soft_argmax(query[i : i + step], db, gb.grid, idx[i : i + step], cfg.window,
                        cfg.beta, valid_b)
            for i in range(0, len(idx), step)
        ])  # fmt: skip
    else:
        pos = torch.stack([idx % gb.grid[1], idx // gb.grid[1]], dim=1)
    pb = gb.cell_to_original(pos.cpu().double())
    return Matches(pts.float(), pb.float(), score.cpu().float(), mutual)
