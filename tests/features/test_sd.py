"""SDFeatureExtractor against plain diffusers calls on a tiny random-weight SD pipeline."""

from __future__ import annotations

import pytest
import torch

from sdcorr.config import SDConfig
from sdcorr.errors import ConfigError
from sdcorr.features.sd import SDFeatureExtractor, tile_offsets
from sdcorr.image import prepare_image

SMALL = dict(frame=192, tile_size=128)  # tiles at {0, 64}: 64 px overlap, like 960/512
# The reference's features (sd-dino/ODISE raw mode, decoder output blocks 2, 5 and 8) as diffusers
# module paths, written out here so that a wrong entry in sdcorr's layer table fails a test.
REFERENCE_LAYERS = {
    "s5": "up_blocks.0.resnets.1",
    "s4": "up_blocks.1.attentions.1",
    "s3": "up_blocks.2.attentions.1",
}


@pytest.fixture(scope="module")
def ext(tiny_models) -> SDFeatureExtractor:
    return SDFeatureExtractor.from_pretrained(str(tiny_models["sd"]), device="cpu", **SMALL)


def _image(seed: int = 0, h: int = 150, w: int = 190) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def test_defaults_are_the_reference_settings(ext) -> None:
    cfg = SDConfig()
    assert dict(cfg.layers) == REFERENCE_LAYERS
    assert (cfg.frame, cfg.tile_size, cfg.timestep, cfg.seed) == (960, 512, 100, 42)
    for name, path in REFERENCE_LAYERS.items():
        assert ext.modules[name] is ext.unet.get_submodule(path), name


def test_tile_offsets() -> None:
    assert tile_offsets(960, 512) == [0, 448]
    assert tile_offsets(960, None) == [0]
    assert tile_offsets(1024, 512, overlap=64) == [0, 448, 512]
    with pytest.raises(ConfigError):
        tile_offsets(960, 512, overlap=512)


def test_hooked_features_equal_a_plain_full_forward(ext) -> None:
    """Our noising + hooks vs a hand-written reference of the same maths and a full forward."""
    tiles = ext.tiles(prepare_image(_image(), 192).pixels[None])
    with torch.inference_mode():
        z = ext.vae.encode(tiles * 2 - 1).latent_dist.mean * 0.18215
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        abar = torch.cumprod(1 - betas, 0)[100].float()
        noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(42))
        noisy = abar.sqrt() * z + (1 - abar).sqrt() * noise
        ctx = ext.prompt_embedding("").expand(len(z), -1, -1)
        seen = {}
        handles = [
            ext.unet.get_submodule(path).register_forward_hook(
                lambda m, i, o, n=name: seen.__setitem__(n, o[0] if isinstance(o, tuple) else o)
            )
            for name, path in REFERENCE_LAYERS.items()
        ]
        ext.unet(noisy, torch.full((len(z),), 100), encoder_hidden_states=ctx)  # full forward
        for h in handles:
            h.remove()
        ours = ext.unet_features(ext.encode(tiles), ctx)
    assert set(ours) == {"s3", "s4", "s5"}
    for name in ours:
        assert torch.allclose(ours[name], seen[name], atol=1e-5), name
    assert ours["s3"].shape[-1] == 8 and ours["s4"].shape[-1] == 4 and ours["s5"].shape[-1] == 2


def test_early_exit_runs_fewer_modules_with_identical_output(tiny_models) -> None:
    runs = {}
    feats = {}
    for early in (False, True):
        e = SDFeatureExtractor.from_pretrained(
            str(tiny_models["sd"]), device="cpu", early_exit=early, **SMALL
        )
        calls = []
        handles = [
            m.register_forward_hook(lambda *a, n=n, c=calls: c.append(n))
            for n, m in e.unet.named_modules()
            if n
        ]
        feats[early] = e([_image()])
        for h in handles:
            h.remove()
        runs[early] = calls
    assert len(runs[True]) < len(runs[False])
    assert not any(n.startswith("up_blocks.3") or n.startswith("conv_out") for n in runs[True])
    assert any(n.startswith("up_blocks.3") for n in runs[False])
    for name in feats[True]:
        assert torch.equal(feats[True][name].features, feats[False][name].features)


def test_batched_tiles_equal_tiles_one_by_one(tiny_models) -> None:
    imgs = [_image(1), _image(2, 190, 120)]
    out = {}
    for bs in (8, 1):
        e = SDFeatureExtractor.from_pretrained(
            str(tiny_models["sd"]), device="cpu", batch_size=bs, **SMALL
        )
        out[bs] = e(imgs)
    for name in out[8]:
        assert torch.allclose(out[8][name].features, out[1][name].features, atol=1e-5)


def test_overlap_averaging_is_exact(ext) -> None:
    # four constant tiles 1, 2, 3, 4 (row-major offsets {0, 64}^2), stride 16 -> 8x8 tiles
    tiles = torch.arange(1.0, 5.0).view(4, 1, 1, 1).expand(4, 2, 8, 8).contiguous()
    out = ext.stitch(tiles, 16)
    assert out.shape == (1, 2, 12, 12)
    assert out[0, 0, 0, 0] == 1 and out[0, 0, 0, 11] == 2 and out[0, 0, 11, 0] == 3
    assert out[0, 0, 5, 0] == 2.0  # rows 4..7 covered by tiles 1 and 3: (1 + 3) / 2
    assert out[0, 0, 0, 5] == 1.5  # cols 4..7: (1 + 2) / 2
    assert out[0, 0, 5, 5] == 2.5  # centre: (1 + 2 + 3 + 4) / 4


def test_default_frame_gives_60_30_15_maps(tiny_models) -> None:
    e = SDFeatureExtractor.from_pretrained(str(tiny_models["sd"]), device="cpu")
    assert e.offsets == [0, 448] and e.strides == {"s3": 16, "s4": 32, "s5": 64}
    out = e([_image()], category="dog")
    assert {k: tuple(v.features.shape[-2:]) for k, v in out.items()} == {
        "s3": (60, 60),
        "s4": (30, 30),
        "s5": (15, 15),
    }
    assert out["s3"].geometry[0].grid == (60, 60) and out["s5"].geometry[0].stride == 64


def test_determinism_no_decoder_and_prompt_cache(ext) -> None:
    a, b = ext([_image(3)]), ext([_image(3)])
    for name in a:
        assert torch.equal(a[name].features, b[name].features)
    assert ext.vae.decoder is None
    calls = []
    h = ext.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    ext.prompt_embedding("a photo of a zebra")
    ext.prompt_embedding("a photo of a zebra")
    h.remove()
    assert len(calls) == 1


def test_prompts(ext, tiny_models) -> None:
    assert ext.prompt_for(None) == "" and ext.prompt_for("dog") == "a photo of a dog"
    fixed = SDFeatureExtractor.from_pretrained(
        str(tiny_models["sd"]), device="cpu", prompt="x", **SMALL
    )
    assert fixed.prompt_for("dog") == "x"
    a = ext([_image()], category="dog")["s3"].features
    b = ext([_image()], category="cat")["s3"].features
    assert not torch.equal(a, b)  # the prompt reaches the U-Net


def test_bad_tiling(tiny_models) -> None:
    with pytest.raises(ConfigError, match="multiple of 64"):
        SDFeatureExtractor.from_pretrained(
            str(tiny_models["sd"]), device="cpu", frame=200, tile_size=None
        )
    with pytest.raises(ConfigError, match="larger than the frame"):
        SDFeatureExtractor.from_pretrained(
            str(tiny_models["sd"]), device="cpu", frame=256, tile_size=512
        )
    assert isinstance(SDConfig().layers, tuple)


# ---------------------------------------------------------------------------- CleanDIFT options
def _save_unet_weights(unet, path) -> str:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(path))
    return str(path)


@pytest.mark.slow
def test_unet_weights_equal_to_the_pipelines_give_identical_features(ext, tmp_path) -> None:
    spec = _save_unet_weights(ext.unet, tmp_path / "same.safetensors")
    other = SDFeatureExtractor.from_pretrained(
        str(ext.config.model), device="cpu", unet_weights=spec, **SMALL
    )
    img = _image()
    a, b = ext([img]), other([img])
    assert all(torch.equal(a[k].features, b[k].features) for k in a)


@pytest.mark.slow
def test_other_unet_weights_give_the_features_of_that_unet_folder(tiny_models, tmp_path) -> None:
    import shutil

    from diffusers import UNet2DConditionModel

    from sdcorr.testing import TINY_UNET

    torch.manual_seed(123)
    unet = UNet2DConditionModel(**TINY_UNET)
    spec = _save_unet_weights(unet, tmp_path / "other.safetensors")
    folder = tmp_path / "sd-other"
    shutil.copytree(tiny_models["sd"], folder)
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet")
    img = _image(1)
    replaced = SDFeatureExtractor.from_pretrained(
        str(tiny_models["sd"]), device="cpu", unet_weights=spec, **SMALL
    )([img])
    expected = SDFeatureExtractor.from_pretrained(str(folder), device="cpu", **SMALL)([img])
    original = SDFeatureExtractor.from_pretrained(str(tiny_models["sd"]), device="cpu", **SMALL)(
        [img]
    )
    assert all(torch.equal(replaced[k].features, expected[k].features) for k in expected)
    assert not torch.allclose(replaced["s3"].features, original["s3"].features)


def test_unet_weights_errors(tiny_models, tmp_path) -> None:
    from sdcorr.errors import ModelNotFoundError

    sd = str(tiny_models["sd"])
    with pytest.raises(ModelNotFoundError, match="not found"):
        SDFeatureExtractor.from_pretrained(sd, device="cpu", unet_weights=str(tmp_path / "x.pt"))
    with pytest.raises(ModelNotFoundError) as err:  # offline (conftest): the one-line hub error
        SDFeatureExtractor.from_pretrained(
            sd, device="cpu", unet_weights="CompVis/cleandift:cleandift_sd15_unet.safetensors"
        )
    assert "--unet-weights" in str(err.value) and "\n" not in str(err.value)
    from safetensors.torch import save_file

    save_file({"conv_in.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ConfigError, match="do not fit"):
        SDFeatureExtractor.from_pretrained(
            sd, device="cpu", unet_weights=str(tmp_path / "bad.safetensors")
        )


def test_unet_weights_under_other_key_names_are_refused(tmp_path) -> None:
    """Issue 19: a file with the right shapes under other names (the ``model.diffusion_model.``
    prefix of original SD checkpoints) must not load nothing silently: one line naming it."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from sdcorr.features.unet_weights import load_unet_weights
    from sdcorr.testing import TINY_UNET

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    torch.manual_seed(1)
    other = UNet2DConditionModel(**TINY_UNET).state_dict()
    path = tmp_path / "sd15-original-layout.safetensors"
    save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in other.items()}, str(path))
    with pytest.raises(ConfigError, match="do not fit") as err:
        load_unet_weights(unet, str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in before.items())


@pytest.mark.slow
def test_clean_latents_skip_the_noise_and_keep_the_timestep(tiny_models) -> None:
    from sdcorr.features.hooks import capture

    def make(**kw):
        opts = {"noise": False, "timestep": 261, **SMALL, **kw}
        return SDFeatureExtractor.from_pretrained(str(tiny_models["sd"]), device="cpu", **opts)

    clean = make()
    img = _image(2)
    out = clean([img])
    assert torch.equal(out["s3"].features, make(seed=7)([img])["s3"].features)  # no noise used
    assert not torch.equal(out["s3"].features, make(timestep=10)([img])["s3"].features)
    # against a direct U-Net call on the clean latents of one whole-frame tile
    whole = SDFeatureExtractor.from_pretrained(
        str(tiny_models["sd"]), device="cpu", noise=False, timestep=261, frame=128,
        tile_size=None,
    )  # fmt: skip
    pixels = prepare_image(img, 128).pixels[None]
    lat = whole.encode(pixels)
    ctx = whole.prompt_embedding("")
    t = torch.tensor([261])
    with torch.inference_mode():
        direct = capture(lambda: whole.unet(lat, t, encoder_hidden_states=ctx), whole.modules)
    got = whole.extract_pixels(pixels, [""])
    assert torch.allclose(got["s3"], direct["s3"].float(), atol=1e-6)
    noisy = SDFeatureExtractor.from_pretrained(
        str(tiny_models["sd"]), device="cpu", timestep=261, frame=128, tile_size=None
    )
    assert not torch.allclose(noisy.extract_pixels(pixels, [""])["s3"], got["s3"], atol=1e-3)
