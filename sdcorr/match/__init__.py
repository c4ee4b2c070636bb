"""Matchers: sparse keypoint transfer and dense correspondence on fused feature grids."""

from __future__ import annotations

from .dense import DenseFlow, match_dense, save_flow, warp
from .sparse import transfer_points

__all__ = ["DenseFlow", "match_dense", "save_flow", "transfer_points", "warp"]
