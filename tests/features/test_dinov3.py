"""ViTExtractor on a tiny random-weight DINOv3 (rotary positions, 4 registers, patch 16)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from sdcorr.cli import main
from sdcorr.config import DinoConfig, get_preset
from sdcorr.errors import ConfigError, ModelNotFoundError
from sdcorr.features.dino import IMAGENET_MEAN, ViTExtractor, folder_normalisation, vit_blocks
from sdcorr.hub import canonical_id, preset_models, resolve_model
from sdcorr.testing import TINY_DINOV3_NORM, save_tiny_dinov3

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"


@pytest.fixture(scope="module")
def dinov3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_dinov3(tmp_path_factory.mktemp("dinov3") / "dinov3")


def _image(h: int = 100, w: int = 150) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("layer", [3, 11])
def test_features_equal_the_models_own_hidden_states(dinov3, layer) -> None:
    ext = ViTExtractor.from_pretrained(str(dinov3), device="cpu", layer=layer, image_size=160)
    img = _image()  # 150 x 100: padded top and bottom in the 160 frame
    fm = ext([img])
    pixels, _ = ext.prepare([img])
    model = AutoModel.from_pretrained(dinov3).eval()
    with torch.inference_mode():
        out = model(pixel_values=pixels, output_hidden_states=True)
    hs = out.hidden_states[layer + 1]
    assert hs.shape[1] == 1 + 4 + 100  # CLS + 4 registers + 10x10 patches
    expected = hs[:, 5:].transpose(1, 2).reshape(1, -1, 10, 10)
    assert fm.features.shape == (1, 32, 10, 10)
    assert torch.equal(fm.features, expected)
    assert fm.geometry[0].grid == (10, 10) and fm.geometry[0].stride == 16


def test_blocks_normalisation_and_default_frame(dinov3, tiny_models, tmp_path) -> None:
    ext = ViTExtractor.from_pretrained(str(dinov3), device="cpu")
    assert ext.config.frame == 960 and ext([_image()]).features.shape[-2:] == (60, 60)
    assert vit_blocks(ext.model) is ext.model.model.layer
    assert ext.hooked_module() is ext.model.model.layer[11]
    assert torch.allclose(ext._mean.flatten(), torch.tensor(TINY_DINOV3_NORM["image_mean"]))
    assert torch.allclose(ext._std.flatten(), torch.tensor(TINY_DINOV3_NORM["image_std"]))
    # a folder without an image processor config falls back to ImageNet's statistics
    bare = tmp_path / "bare"
    shutil.copytree(dinov3, bare)
    (bare / "preprocessor_config.json").unlink()
    assert folder_normalisation(bare)[0] == IMAGENET_MEAN
    # DINOv2 keeps its 840 frame (60 x patch 14) and its encoder blocks
    v2 = ViTExtractor.from_pretrained(str(tiny_models["dino"]), device="cpu")
    assert v2.config.frame == 840 and vit_blocks(v2.model) is v2.model.encoder.layer


def test_dinov3_rejects_overlapping_patches_and_bad_frames(dinov3) -> None:
    with pytest.raises(ConfigError, match="DINOv2"):
        ViTExtractor.from_pretrained(str(dinov3), device="cpu", stride=8, image_size=160)
    with pytest.raises(ConfigError, match="frame 840"):
        ViTExtractor.from_pretrained(str(dinov3), device="cpu", image_size=840)


def test_aliases_presets_and_missing_model_error(monkeypatch, tmp_path) -> None:
    assert canonical_id("dinov3-base") == "facebook/dinov3-vitb16-pretrain-lvd1689m"
    assert canonical_id("dinov3-7b") == "facebook/dinov3-vit7b16-pretrain-lvd1689m"
    assert preset_models("dinov3") == {"dino": "facebook/dinov3-vitb16-pretrain-lvd1689m"}
    assert set(preset_models("sd-dinov3")) == {"sd", "dino"}
    assert get_preset("sd-dinov3").dino == DinoConfig(model=canonical_id("dinov3-base"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    from sdcorr import hub

    monkeypatch.setattr(hub, "cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("dinov3-large", "dino")
    msg = str(err.value)
    assert "facebook/dinov3-vitl16-pretrain-lvd1689m" in msg and "\n" not in msg


def test_cli_match_with_a_dinov3_folder(dinov3, tmp_path) -> None:
    out = tmp_path / "m.json"
    a, b = str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "grace_hopper.jpg")
    rc = main(["-q", "match", a, b, "--preset", "dino", "--dino-model", str(dinov3),
               "--device", "cpu", "--json", str(out), "--grid-step", "8"])  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["config"]["dino"]["frame"] == 960  # resolved: 60 x patch 16
    assert len(data["points_b"]) == len(data["points_a"]) > 10 and data["flipped"] is False
