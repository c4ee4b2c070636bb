"""A fake pipeline with the interface of ``sdcorr.pipeline.SDDino`` that the evaluation uses.

Its "features" are only the image geometry, and it predicts each target keypoint by scaling the
source keypoint by the size ratio of the two images: deterministic, cheap, and checkable. Its
images go through the real feature cache (:class:`sdcorr.cache.FeatureCache`), as SDDino's do.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdcorr.cache import FeatureCache, ImageFeatures
from sdcorr.config import MatchConfig
from sdcorr.image import Geometry
from sdcorr.types import FeatureMap, Matches


class FakePipe:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.config = SimpleNamespace(match=MatchConfig())  # no flip alignment
        self.cache = FeatureCache(self._extract_one, size=32)

    def extract(self, images: list, category: Any = None) -> list[ImageFeatures]:
        out = []
        for img in images:
            self.calls.append((Path(img).name, category))
            w, h = Image.open(img).size
            feats = torch.arange(4.0).reshape(1, 1, 2, 2) + w
            out.append(ImageFeatures({"dino": FeatureMap(feats, (Geometry(w, h, 28, 14),))}))
        return out

    def _extract_one(self, image: Any, category: Any) -> ImageFeatures:
        return self.extract([image], category)[0]

    def fuse(self, a: ImageFeatures, b: ImageFeatures) -> tuple[FeatureMap, FeatureMap]:
        return a.maps["dino"], b.maps["dino"]

    def match_fused(self, fa: FeatureMap, fb: FeatureMap, points_a: Any) -> Matches:
        ga, gb = fa.geometry[0], fb.geometry[0]
        scale = torch.tensor([gb.width / ga.width, gb.height / ga.height], dtype=torch.float64)
        pa = torch.as_tensor(points_a, dtype=torch.float64)
        return Matches(pa, pa * scale, torch.ones(len(pa)))

    def match_points(self, img_a: Any, img_b: Any, points_a: Any, category: Any = None):
        ra, rb = self.cache.get_many([img_a, img_b], category)
        return self.match_fused(*self.fuse(ra, rb), points_a)


def expected_prediction(src_kps: np.ndarray, src_size: tuple, trg_size: tuple) -> np.ndarray:
    return src_kps * np.array([trg_size[0] / src_size[0], trg_size[1] / src_size[1]])
