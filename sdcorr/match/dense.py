"""Dense correspondence B → A: for every cell (or pixel) of B, its match in A.

Matching runs on the feature grid (optionally bilinearly resampled to a denser ``grid``, as the
reference does at 156 for its swap demo), chunked so a 156x156 grid needs a few hundred MB; the
per-cell result is lifted to B's pixels by nearest-cell lookup or bilinear flow upsampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import MatchConfig
from ..errors import PointsError
from ..image import Geometry
from ..io import atomic_path
from ..types import FeatureMap
from .sparse import descriptors, nearest, valid_cells


@dataclass(frozen=True)
class DenseFlow:
    """Dense B → A correspondence on B's grid.

    Attributes:
        cells_a: ``(h, w, 2)`` float ``(col, row)`` of the matched cell in A's grid, per B cell.
        scores: ``(h, w)`` cosine similarity of each match.
        valid: ``(h, w)`` bool, B cells that were matched (inside B's mask / the image).
        geometry_a: A's grid geometry.
        geometry_b: B's grid geometry.
    """

    cells_a: torch.Tensor
    scores: torch.Tensor
    valid: torch.Tensor
    geometry_a: Geometry
    geometry_b: Geometry

    def points_a(self) -> torch.Tensor:
        """``(h, w, 2)`` matched positions in A's original pixels, per B cell."""
        h, w, _ = self.cells_a.shape
        return self.geometry_a.cell_to_original(self.cells_a.reshape(-1, 2)).view(h, w, 2)

    def to_pixels(self, mode: str = "nearest") -> torch.Tensor:
        """``(Hb, Wb, 2)`` float32: for each pixel of B, its match ``(x, y)`` in A's pixels.

        Args:
            mode: ``"nearest"`` (each pixel takes its cell's match) or ``"bilinear"`` (the match
                positions are interpolated between cell centres).
        """
        gb = self.geometry_b
        field = self.points_a()  # (h, w, 2)
        if mode == "nearest":
            out = gb.grid_to_pixels(field)
        elif mode == "bilinear":
            pix = gb.pixel_centres()
            frac = (gb.to_frame(pix) - (gb.cell - 1) / 2) / gb.stride  # continuous cell index
            h, w = field.shape[:2]
            norm = torch.stack([frac[:, 0] / max(w - 1, 1), frac[:, 1] / max(h - 1, 1)], 1) * 2 - 1
            grid = norm.float().view(1, 1, -1, 2)
            src = field.permute(2, 0, 1)[None].float()
            out = F.grid_sample(
                src, grid, mode="bilinear", padding_mode="border", align_corners=True
            )
            out = out[0, :, 0].t()
        else:
            raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
        return out.float().view(gb.height, gb.width, 2)

    def valid_pixels(self) -> torch.Tensor:
        """``(Hb, Wb)`` bool: pixels of B whose cell was matched."""
        return self.geometry_b.grid_to_pixels(self.valid)

    def arrays(self) -> dict[str, np.ndarray]:
        """The correspondence at B's pixels (nearest cell), as written by :func:`save_flow`.

        Returns:
            ``flow (Hb, Wb, 2)`` float32 ``(x, y)`` in A's pixels, ``valid (Hb, Wb)`` bool,
            ``score (Hb, Wb)`` float32 (cosine similarity of each pixel's cell match) and
            ``size_a``/``size_b`` ``(W, H)`` int64.
        """
        ga, gb = self.geometry_a, self.geometry_b
        return {
            "flow": self.to_pixels("nearest").numpy().astype(np.float32),
            "valid": self.valid_pixels().numpy().astype(bool),
            "score": gb.grid_to_pixels(self.scores.float()).numpy().astype(np.float32),
            "size_a": np.array([ga.width, ga.height], dtype=np.int64),
            "size_b": np.array([gb.width, gb.height], dtype=np.int64),
        }


def save_flow(path: str | Path, flow: DenseFlow) -> Path:
    """Write :meth:`DenseFlow.arrays` as an ``.npz`` (atomic: temp name, then rename).

    Args:
        path: output file (``.npz``).
        flow: the dense B → A correspondence.

    Returns:
        ``path``.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **flow.arrays())
    return Path(path)


def resample(fm: FeatureMap, n: int) -> FeatureMap:
    """Bilinearly resize a map to ``n x n`` cells (``align_corners=False``), geometry included."""
    if fm.features.shape[-1] == n:
        return fm
    f = F.interpolate(fm.features.float(), size=(n, n), mode="bilinear", align_corners=False)
    return FeatureMap(f, tuple(g.resampled(n) for g in fm.geometry))


def match_dense(
    fa: FeatureMap,
    fb: FeatureMap,
    grid: int | None = None,
    config: MatchConfig | None = None,
    mask_a: torch.Tensor | np.ndarray | None = None,
    mask_b: torch.Tensor | np.ndarray | None = None,
) -> DenseFlow:
    """Nearest neighbour in A of every cell of B.

    Args:
        fa: ``(1, C, h, w)`` descriptors of A.
        fb: ``(1, C, h', w')`` descriptors of B.
        grid: resample both maps to ``grid x grid`` cells first (``None``: native grids).
        config: ``content_only`` and ``chunk`` are used.
        mask_a: optional ``(Ha, Wa)`` bool: only A cells inside it are candidates.
        mask_b: optional ``(Hb, Wb)`` bool: only B cells inside it are matched (``valid``).

    Returns:
        :class:`DenseFlow` on B's (resampled) grid.
    """
    cfg = config or MatchConfig()
    if grid is not None:
        fa, fb = resample(fa, grid), resample(fb, grid)
    da, db = descriptors(fa), descriptors(fb)
    valid_a = valid_cells(fa, mask_a, cfg.content_only)
    if valid_a is not None and not valid_a.any():
        raise PointsError("the mask of A selects no feature cell")
    valid_b = valid_cells(fb, mask_b, cfg.content_only)
    idx, score = nearest(db, da, valid_a, cfg.chunk)
    wa = fa.geometry[0].grid[1]
    hb, wb = fb.geometry[0].grid
    cells = torch.stack([idx % wa, idx // wa], dim=1).float().view(hb, wb, 2).cpu()
    valid = torch.ones(hb, wb, dtype=torch.bool) if valid_b is None else valid_b.view(hb, wb)
    return DenseFlow(cells, score.view(hb, wb).cpu(), valid.cpu(), fa.geometry[0], fb.geometry[0])


def warp(image_a: np.ndarray, flow: torch.Tensor, mode: str = "bilinear") -> np.ndarray:
    """Rebuild B from A's pixels: ``out[y, x] = A[flow[y, x]]``.

    Args:
        image_a: ``(Ha, Wa, 3)`` uint8.
        flow: ``(Hb, Wb, 2)`` ``(x, y)`` positions in A's pixels (e.g. ``DenseFlow.to_pixels()``).
        mode: ``"bilinear"`` or ``"nearest"`` sampling of A.

    Returns:
        ``(Hb, Wb, 3)`` uint8.
    """
    a = torch.as_tensor(np.asarray(image_a)).permute(2, 0, 1)[None].float()
    ha, wa = a.shape[-2:]
    f = torch.as_tensor(flow).float()
    norm = torch.stack([(f[..., 0] + 0.5) / wa, (f[..., 1] + 0.5) / ha], dim=-1) * 2 - 1
    out = F.grid_sample(a, norm[None], mode=mode, padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
