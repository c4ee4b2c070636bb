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


# ---------------------------------------------------------------------------- presets and CLI
def test_geoaware_and_cleandift_presets_follow_their_configs() -> None:
    geo = get_preset("geoaware")
    # GeoAware-SC configs/eval_zero_shot_spair.yaml: ADAPT_FLIP, SOFT_EVAL, SOFT_EVAL_WINDOW 5,
    # DUMMY_NET (raw s3/s4/s5 + DINO, no PCA); preprocess_map.py: t=50, no caption
    assert geo.match.flip_align and geo.match.soft_argmax and geo.match.window == 5
    assert geo.match.beta == 0.02 and geo.fusion.pca_dims is None
    assert geo.sd.timestep == 50 and geo.sd.prompt == "" and geo.sd.noise
    assert geo.dino == get_preset("sd-dino").dino
    clean = get_preset("cleandift")
    assert clean.match == geo.match and clean.fusion == geo.fusion
    assert clean.sd.unet_weights == "CompVis/cleandift:cleandift_sd15_unet.safetensors"
    assert not clean.sd.noise and clean.sd.timestep == 261
    assert clean.sd.prompt is None and clean.sd.prompt_template == "A photo of a {category}"
    assert get_preset("dinov3").sd is None and get_preset("dinov3").dino.frame is None


def test_cli_options_reach_the_config() -> None:
    import argparse

    from sdcorr.commands.match import add_arguments
    from sdcorr.commands.options import add_model_options, resolve_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["a.jpg", "b.jpg", "--unet-weights", "org/unet:w.safetensors", "--no-noise",
                         "--flip-align", "--mask-a", "auto", "--mask-b", "auto"])  # fmt: skip
    r = resolve_args(args)
    cfg = r.config
    assert cfg.sd.unet_weights == "org/unet:w.safetensors" and not cfg.sd.noise
    assert cfg.match.flip_align and r.run.masks == ("auto", "auto")
    q = argparse.ArgumentParser()
    add_model_options(q)
    plain = resolve_args(q.parse_args([])).config
    assert plain.sd.unet_weights is None and plain.sd.noise


def test_cli_flip_align_and_auto_masks(tiny_models, tmp_path) -> None:
    import json

    from sdcorr.cli import main

    img = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((160, 120))
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    img.save(a)
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(b)
    out, js = tmp_path / "swap.png", tmp_path / "m.json"
    rc = main(["-q", "match", str(a), str(b), "--preset", "dino", "--dino-model",
               str(tiny_models["dino"]), "--dino-frame", "224", "--device", "cpu", "--flip-align",
               "--mask-a", "auto", "--mask-b", "auto", "--out", str(out), "--json", str(js),
               "--dense-grid", "0"])  # fmt: skip
    assert rc == 0 and out.is_file()
    data = json.loads(js.read_text())
    assert data["flipped"] is True and data["config"]["match"]["flip_align"] is True
    # B is A's mirror, so A's mirror matches every cell of B to itself: each pixel of B's
    # automatic mask is repainted with A's pixel at the mirror of its cell centre, the rest of
    # B stays as it was
    cfg = get_preset("dino")
    cfg = dataclasses.replace(cfg, dino=dataclasses.replace(cfg.dino, frame=224))
    pipe = SDDino.from_pretrained(config=cfg, dino_model=str(tiny_models["dino"]), device="cpu")
    mask = pipe.foreground_mask(b)
    assert 0.05 < mask.mean() < 0.95
    geo = pipe.features(b, b)[0].geometry[0]
    centres = geo.cell_to_original(geo.to_cell(geo.pixel_centres())).numpy().reshape(120, 160, 2)
    xa = np.clip(np.floor(159 - centres[..., 0] + 0.5), 0, 159).astype(int)
    ya = np.clip(np.floor(centres[..., 1] + 0.5), 0, 119).astype(int)
    pixels_a, expected = np.asarray(Image.open(a)), np.asarray(Image.open(b)).copy()
    expected[mask] = pixels_a[ya[mask], xa[mask]]
    swapped = np.asarray(Image.open(out).convert("RGB"))
    assert np.array_equal(swapped, expected)
    assert not np.array_equal(swapped, np.asarray(Image.open(b)))  # the repaint did something
