"""Matchers: sparse keypoint transfer and dense correspondence on fused feature grids."""

from __future__ import annotations

from .dense import DenseFlow, match_dense, warp
from .sparse import transfer_points

__all__ = ["DenseFlow", "match_dense", "transfer_points", "warp"]
