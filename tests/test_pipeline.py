"""SDDino with oracle extractors injected through the API, and with tiny real models."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdcorr.config import get_preset
from sdcorr.pipeline import SDDino
from sdcorr.testing import PositionOracle

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
F, S = 224, 14
IMG = np.zeros((F, F, 3), np.uint8)
SD_STRIDES = {"s3": 14, "s4": 28, "s5": 56}


def _oracle_pipe(transform, preset: str = "sd-dino") -> SDDino:
    cfg = get_preset(preset)
    sd = PositionOracle(frame=F, transform=transform, layers=SD_STRIDES) if cfg.sd else None
    dino = PositionOracle(frame=F, stride=S, transform=transform) if cfg.dino else None
    return SDDino(cfg, sd=sd, dino=dino)


def _cells(lo: int, hi: int) -> torch.Tensor:
    r = torch.arange(lo, hi)
    return torch.stack(torch.meshgrid(r, r, indexing="xy"), -1).reshape(-1, 2)


@pytest.mark.parametrize("preset", ["sd-dino", "dino", "sd"])
def test_fused_pipeline_recovers_a_known_shift(preset: str) -> None:
    pipe = _oracle_pipe(lambda p: p - torch.tensor([2.0 * S, 1.0 * S], dtype=torch.float64), preset)
    fa, _ = pipe.features(IMG, IMG)
    cells = _cells(2, 12)
    pts = fa.geometry[0].cell_to_original(cells)
    m = pipe.match_points(IMG, IMG, pts)
    assert torch.equal(m.points_b, (pts + torch.tensor([2.0 * S, 1.0 * S])).float())
    if preset == "sd-dino":
        # co-PCA keeps 256 dims per layer, fewer where the pair has fewer tokens (8x8, 4x4 maps)
        sd_dims = sum(min(256, 2 * n * n) for n in (16, 8, 4))
        assert fa.features.shape[1] == sd_dims + pipe.dino([IMG]).features.shape[1]


def test_extract_and_fuse_split_per_image() -> None:
    pipe = _oracle_pipe(None)
    feats = pipe.extract([IMG, IMG[:100]], category="dog")
    assert len(feats) == 2 and set(feats[0].maps) == {"s3", "s4", "s5", "dino"}
    assert feats[1].maps["dino"].geometry[0].height == 100
    assert feats[0].nbytes > 0
    fa, fb = pipe.fuse(feats[0], feats[1])
    assert fa.features.shape[0] == 1 and fb.geometry[0].height == 100


def test_dense_identity_with_oracle() -> None:
    pipe = _oracle_pipe(None, "dino")
    flow = pipe.match_dense(IMG, IMG)
    n = flow.cells_a.shape[0]
    r = torch.arange(n).float()
    assert torch.equal(flow.cells_a, torch.stack(torch.meshgrid(r, r, indexing="xy"), -1))


def test_tiny_models_identical_images_map_to_themselves(tiny_models) -> None:
    base = get_preset("sd-dino")
    cfg = dataclasses.replace(
        base,
        sd=dataclasses.replace(base.sd, frame=256, tile_size=128),
        dino=dataclasses.replace(base.dino, frame=224),
    )
    pipe = SDDino.from_pretrained(
        config=cfg,
        device="cpu",
        dino_model=str(tiny_models["dino"]),
        sd_model=str(tiny_models["sd"]),
        channels_last=True,  # a speed switch: must not change what is matched
    )
    assert pipe.sd.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    img = np.asarray(Image.open(EXAMPLES / "astronaut.jpg").convert("RGB"))
    fa, fb = pipe.features(img, img, category="person")
    assert torch.equal(fa.features, fb.features)
    pts = fa.geometry[0].grid_points()
    m = pipe.match_fused(fa, fb, pts, mutual=True)
    assert torch.equal(m.points_b, m.points_a) and m.mutual.all()
    assert torch.allclose(m.scores, torch.ones_like(m.scores), atol=1e-5)
