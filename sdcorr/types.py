"""Result containers shared by the extractors, fusion and matchers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .image import Geometry


@dataclass(frozen=True)
class FeatureMap:
    """Dense features of a batch of images.

    Attributes:
        features: ``(B, C, h, w)`` tensor on the grid of ``geometry``.
        geometry: one :class:`Geometry` per image (same frame and grid for all), mapping the
            grid back to that image's original pixels.
    """

    features: torch.Tensor
    geometry: tuple[Geometry, ...]

    def __post_init__(self) -> None:
        f = self.features
        if f.ndim != 4:
            raise ValueError(f"features must be (B, C, h, w), got {tuple(f.shape)}")
        if len(self.geometry) != f.shape[0]:
            raise ValueError(f"{f.shape[0]} feature maps but {len(self.geometry)} geometries")
        if self.geometry and tuple(f.shape[-2:]) != self.geometry[0].grid:
            raise ValueError(
                f"feature grid {tuple(f.shape[-2:])} != geometry grid {self.geometry[0].grid}"
            )

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, i: int | slice) -> FeatureMap:
        """The feature map(s) of image ``i`` as a batch (``(1, C, h, w)`` for an int)."""
        if isinstance(i, int):
            i = slice(i, i + 1 if i != -1 else None)
        return FeatureMap(self.features[i], self.geometry[i])

    def to(self, *args: Any, **kwargs: Any) -> FeatureMap:
        """Move/cast the features like :meth:`torch.Tensor.to`."""
        return FeatureMap(self.features.to(*args, **kwargs), self.geometry)


@dataclass(frozen=True)
class Matches:
    """Point correspondences from image A to image B.

    Attributes:
        points_a: ``(K, 2)`` float ``(x, y)`` in A's original pixels.
        points_b: ``(K, 2)`` float ``(x, y)`` in B's original pixels.
        scores: ``(K,)`` cosine similarity of the matched descriptors.
        mutual: ``(K,)`` bool, whether each match is a mutual nearest neighbour (all ``True``
            when the check was not asked for).
        flipped: the points were transferred from A's horizontal mirror (flip alignment).
    """

    points_a: torch.Tensor
    points_b: torch.Tensor
    scores: torch.Tensor
    mutual: torch.Tensor | None = None
    flipped: bool = False

    def __len__(self) -> int:
        return self.points_a.shape[0]

    def numpy(self) -> dict[str, np.ndarray]:
        """The fields as numpy arrays (float32 points and scores)."""
        out = {
            "points_a": self.points_a.detach().cpu().float().numpy(),
            "points_b": self.points_b.detach().cpu().float().numpy(),
            "scores": self.scores.detach().cpu().float().numpy(),
        }
        if self.mutual is not None:
            out["mutual"] = self.mutual.detach().cpu().numpy()
        return out

    def to_dict(self) -> dict[str, list | bool]:
        """JSON-ready lists (and the ``flipped`` flag)."""
        return {**{k: v.tolist() for k, v in self.numpy().items()}, "flipped": self.flipped}
