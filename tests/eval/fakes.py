"""A fake pipeline with the ``extract/fuse/match_raw`` interface of ``sdcorr.pipeline.SDDino``.

Its "features" are only the image geometry, and it predicts each target keypoint by scaling the
source keypoint by the size ratio of the two images: deterministic, cheap, and checkable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdcorr.image import Geometry
from sdcorr.types import FeatureMap, Matches


@dataclass(frozen=True)
class FakeFeatures:
    maps: dict[str, FeatureMap]

    def to(self, device: Any) -> FakeFeatures:
        return self


class FakePipe:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def extract(self, images: list, category: Any = None) -> list[FakeFeatures]:
        out = []
        for img in images:
            self.calls.append((Path(img).name, category))
            w, h = Image.open(img).size
            feats = torch.arange(4.0).reshape(1, 1, 2, 2) + w
            out.append(FakeFeatures({"dino": FeatureMap(feats, (Geometry(w, h, 28, 14),))}))
        return out

    def fuse(self, a: FakeFeatures, b: FakeFeatures) -> tuple[FeatureMap, FeatureMap]:
        return a.maps["dino"], b.maps["dino"]

    def match_fused(self, fa: FeatureMap, fb: FeatureMap, points_a: Any) -> Matches:
        ga, gb = fa.geometry[0], fb.geometry[0]
        scale = torch.tensor([gb.width / ga.width, gb.height / ga.height], dtype=torch.float64)
        pa = torch.as_tensor(points_a, dtype=torch.float64)
        return Matches(pa, pa * scale, torch.ones(len(pa)))

    def match_raw(self, ra: FakeFeatures, rb: FakeFeatures, points_a: Any, mirror: Any = None):
        assert mirror is None  # the fake has no flip alignment
        return self.match_fused(*self.fuse(ra, rb), points_a)


def expected_prediction(src_kps: np.ndarray, src_size: tuple, trg_size: tuple) -> np.ndarray:
    return src_kps * np.array([trg_size[0] / src_size[0], trg_size[1] / src_size[1]])
