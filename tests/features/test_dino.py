"""ViTExtractor against direct transformers calls on tiny random-weight DINOv2 models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from sdcorr.config import DinoConfig
from sdcorr.errors import ConfigError
from sdcorr.features.dino import ViTExtractor, hub_pos_embeddings
from sdcorr.testing import save_tiny_dino

FRAME = 224  # 16 x 16 patches of 14


# ------------------------------------------------------------------ the DINOv2 hub rule, by hand
def _keys(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution kernel (PyTorch's bicubic uses a = -0.75)."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _bicubic_axis(x: np.ndarray, n: int, scale: float) -> np.ndarray:
    """Resample axis 0 of ``x`` to ``n`` samples at ``src = (i + 0.5) / scale - 0.5``."""
    m = x.shape[0]
    out = np.zeros((n, *x.shape[1:]))
    for i in range(n):
        src = (i + 0.5) / scale - 0.5
        x0 = math.floor(src)
        for k in range(-1, 3):
            out[i] += _keys(np.array(src - (x0 + k))) * x[min(max(x0 + k, 0), m - 1)]
    return out


def hub_rule(table: torch.Tensor, n: int) -> torch.Tensor:
    """``(1, 1 + M*M, C)`` → ``(1, 1 + n*n, C)``: bicubic, scale factor ``(n + 0.1) / M`` per axis
    (facebookresearch/dinov2 ``interpolate_pos_encoding`` with ``interpolate_offset = 0.1``)."""
    m = math.isqrt(table.shape[1] - 1)
    grid = table[0, 1:].double().numpy().reshape(m, m, -1)
    s = (n + 0.1) / m
    out = _bicubic_axis(_bicubic_axis(grid, n, s).transpose(1, 0, 2), n, s).transpose(1, 0, 2)
    pos = torch.from_numpy(out.reshape(1, n * n, -1)).to(table.dtype)
    return torch.cat([table[:, :1], pos], dim=1)


def _install_hub_rule(model) -> None:
    emb = model.embeddings
    emb.interpolate_pos_encoding = lambda e, h, w: hub_rule(emb.position_embeddings, h // 14)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, FRAME, FRAME, generator=g)


def _direct(folder, pixels: torch.Tensor, hub: bool = True, **kw):
    """The model called directly; ``hub``: with the hub's position rule written out above."""
    model = AutoModel.from_pretrained(folder).eval()
    if hub:
        _install_hub_rule(model)
    with torch.inference_mode():
        return model, model(pixel_values=pixels, output_hidden_states=True, **kw)


def test_token_facet_equals_hidden_state(tiny_models, image) -> None:
    ext = ViTExtractor.from_pretrained(str(tiny_models["dino"]), device="cpu", image_size=FRAME)
    pixels, geos = ext.prepare([image])
    fm = ext([image])
    _, out = _direct(tiny_models["dino"], pixels)
    expected = out.hidden_states[12][:, 1:].transpose(1, 2).reshape(1, -1, 16, 16)
    assert fm.features.shape == (1, 32, 16, 16)
    assert torch.allclose(fm.features, expected, atol=1e-5)
    # it is the block output before the final LayerNorm
    assert not torch.allclose(fm.features.flatten(2).transpose(1, 2), out.last_hidden_state[:, 1:])
    assert fm.geometry[0].grid == (16, 16) and geos[0].stride == 14


@pytest.mark.parametrize("facet", ["key", "query", "value"])
def test_qkv_facets_equal_attention_projections(tiny_models, image, facet) -> None:
    ext = ViTExtractor.from_pretrained(
        str(tiny_models["dino"]), device="cpu", image_size=FRAME, facet=facet, layer=5
    )
    pixels, _ = ext.prepare([image])
    _, out = _direct(tiny_models["dino"], pixels)
    model = ext.model
    block = model.encoder.layer[5]
    with torch.inference_mode():
        x = block.norm1(out.hidden_states[5])
        linear = block.attention
        linear = getattr(linear, f"{facet[0]}_proj", None) or linear.attention.get_submodule(facet)
        proj = linear(x)
    expected = proj[:, 1:].transpose(1, 2).reshape(1, -1, 16, 16)
    assert torch.allclose(ext([image]).features, expected, atol=1e-6)


def test_registers_are_dropped(tmp_path, image) -> None:
    folder = save_tiny_dino(tmp_path / "reg", registers=4)
    ext = ViTExtractor.from_pretrained(str(folder), device="cpu", image_size=FRAME)
    assert ext.num_prefix == 5
    pixels, _ = ext.prepare([image])
    _, out = _direct(folder, pixels)
    expected = out.hidden_states[12][:, 5:].transpose(1, 2).reshape(1, -1, 16, 16)
    assert torch.allclose(ext([image]).features, expected, atol=1e-5)


def test_overlapping_patches_give_a_denser_grid(tiny_models, image) -> None:
    dense = ViTExtractor.from_pretrained(
        str(tiny_models["dino"]), device="cpu", image_size=FRAME, stride=7
    )
    fm = dense([image])
    assert fm.features.shape[-2:] == (31, 31)
    assert fm.geometry[0].grid == (31, 31)
    # even cells see exactly the patches of the stride-14 grid (positional embeddings differ)
    conv = dense.model.embeddings.patch_embeddings.projection
    assert conv.stride == (7, 7)


def test_batch_of_different_sizes_and_determinism(tiny_models) -> None:
    ext = ViTExtractor.from_pretrained(str(tiny_models["dino"]), device="cpu", image_size=FRAME)
    g = torch.Generator().manual_seed(1)
    imgs = [torch.rand(3, 100, 180, generator=g), torch.rand(3, 200, 90, generator=g)]
    a, b = ext(imgs), ext(imgs)
    assert torch.equal(a.features, b.features)
    assert [x.width for x in a.geometry] == [180, 90]
    single = ext([imgs[1]])
    assert torch.allclose(single.features, a.features[1:], atol=1e-5)


def test_bad_config(tiny_models) -> None:
    with pytest.raises(ConfigError, match="facet"):
        ViTExtractor.from_pretrained(str(tiny_models["dino"]), device="cpu", facet="attn")
    with pytest.raises(ConfigError, match="layer 12"):
        ViTExtractor.from_pretrained(str(tiny_models["dino"]), device="cpu", layer=12)
    with pytest.raises(ConfigError, match="stride 5"):
        ViTExtractor.from_pretrained(str(tiny_models["dino"]), device="cpu", stride=5)


# ------------------------------------------------------------------ position embeddings
@pytest.mark.parametrize("m,n", [(37, 60), (4, 16), (37, 37 + 3), (16, 4)])
def test_hub_pos_embeddings_equal_the_formula(m, n) -> None:
    table = torch.randn(1, 1 + m * m, 6, generator=torch.Generator().manual_seed(m + n))
    got = hub_pos_embeddings(table, (n, n))
    assert got.shape == (1, 1 + n * n, 6)
    assert torch.allclose(got, hub_rule(table, n), atol=5e-5)  # float32 sampling positions
    # transformers' rule (size=(n, n)) samples elsewhere: every token moves
    grid = table[:, 1:].reshape(1, m, m, 6).permute(0, 3, 1, 2)
    size_rule = F.interpolate(grid, size=(n, n), mode="bicubic", align_corners=False)
    size_rule = size_rule.permute(0, 2, 3, 1).reshape(1, n * n, 6)
    assert (got[:, 1:] - size_rule).abs().amax(-1).min() > 1e-4


def test_hub_pos_embeddings_keep_the_native_grid() -> None:
    table = torch.randn(1, 1 + 37 * 37, 4)
    assert hub_pos_embeddings(table, (37, 37)) is table


def test_transformers_rule_is_one_option_away(tiny_models, image) -> None:
    ext = ViTExtractor.from_pretrained(
        str(tiny_models["dino"]), device="cpu", image_size=FRAME, pos_interpolation="transformers"
    )
    pixels, _ = ext.prepare([image])
    _, plain = _direct(tiny_models["dino"], pixels, hub=False)
    _, hub = _direct(tiny_models["dino"], pixels, hub=True)
    feats = ext([image]).features
    expected = plain.hidden_states[12][:, 1:].transpose(1, 2).reshape(1, -1, 16, 16)
    assert torch.equal(feats, expected)
    hub_feats = hub.hidden_states[12][:, 1:].transpose(1, 2).reshape(1, -1, 16, 16)
    assert not torch.allclose(feats, hub_feats, atol=1e-3)
    cfg = DinoConfig()  # frame None = 60 cells of the model's patch: 840 for DINOv2 (patch 14)
    assert (cfg.frame, cfg.layer, cfg.facet, cfg.pos_interpolation) == (None, 11, "token", "hub")
    assert ViTExtractor.from_pretrained(str(tiny_models["dino"]), device="cpu").config.frame == 840
    with pytest.raises(ConfigError, match="position interpolation"):
        ViTExtractor.from_pretrained(
            str(tiny_models["dino"]), device="cpu", pos_interpolation="nearest"
        )
