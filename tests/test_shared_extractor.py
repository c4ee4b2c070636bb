"""``sdcorr.testing.SharedExtractor`` (the real-weights tier extracts each image once per session)
gives what the extractor it wraps gives, and runs each image through it once."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sdcorr.testing import SharedExtractor


def test_each_image_runs_once_and_features_equal_a_direct_call(tiny_models) -> None:
    from sdcorr.config import DinoConfig
    from sdcorr.features.dino import ViTExtractor

    inner = ViTExtractor.from_config(DinoConfig(model=str(tiny_models["dino"]), frame=112), "cpu")
    rng = np.random.default_rng(0)
    a, b = (Image.fromarray((rng.random((60, 90, 3)) * 255).astype(np.uint8)) for _ in range(2))
    shared = SharedExtractor(inner)
    out = shared([a, b, a.copy()])  # a copy has the same pixels: served from memory
    assert shared.extracted == 2 and shared([b]).features.equal(out.features[1:2])
    direct = torch.cat([inner([im]).features for im in (a, b, a)])
    assert torch.equal(out.features, direct)
    assert [g.width for g in out.geometry] == [90, 90, 90] and shared.extracted == 2
