"""ViTExtractor against direct transformers calls on tiny random-weight DINOv2 models."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from sdcorr.errors import ConfigError
from sdcorr.features.dino import ViTExtractor
from sdcorr.testing import save_tiny_dino

FRAME = 224  # 16 x 16 patches of 14


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, FRAME, FRAME, generator=g)


def _direct(folder, pixels: torch.Tensor, **kw):
    model = AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        return model, model(pixel_values=pixels, output_hidden_states=True, **kw)


def test_token_facet_equals_hidden_state(tiny_models, image) -> None:
    ext = ViTExtractor.from_pretrained(str(tiny_models["dino"]), device="cpu", image_size=FRAME)
    pixels, geos = ext.prepare([image])
    fm = ext([image])
    _, out = _direct(tiny_models["dino"], pixels)
    expected = out.hidden_states[12][:, 1:].transpose(1, 2).reshape(1, -1, 16, 16)
    assert fm.features.shape == (1, 32, 16, 16)
    assert torch.equal(fm.features, expected)
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
    assert torch.equal(ext([image]).features, expected)


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
