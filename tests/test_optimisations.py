"""Each speed optimisation gives the reference procedure's numbers (CPU, tiny models).

The reference procedure is ``benchmarks/speedkit/baseline.py`` (per image, per tile, uncached
prompt, full U-Net with plain hooks, ``output_hidden_states`` for DINO). CUDA variants of the
half-precision and ``channels_last`` checks are marked ``cuda`` and skip without a GPU.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from speedkit.baseline import ReferenceProcedure, build_decoder  # noqa: E402
from speedkit.clock import LeanFlopCounter, StageClock, flop_counter  # noqa: E402
from speedkit.floor import floor_flops  # noqa: E402
from speedkit.models import Frames, cast_copy, extractors, load_folders  # noqa: E402
from speedkit.report import max_rel_diff, nn_agreement  # noqa: E402
from speedkit.runs import (  # noqa: E402
    Baseline,
    Ours,
    fuse,
    keypoints,
    make_images,
    measure_workload,
    workload_pairs,
)

from sdcorr.cache import FeatureCache  # noqa: E402
from sdcorr.config import MatchConfig  # noqa: E402
from sdcorr.device import native_dtype  # noqa: E402
from sdcorr.errors import ConfigError  # noqa: E402
from sdcorr.features.accel import (  # noqa: E402
    ChannelsLastGroupNorm,
    compile_blocks,
    group_norm_channels_last,
    to_channels_last,
)
from sdcorr.features.dino import ViTExtractor  # noqa: E402
from sdcorr.features.sd import SDFeatureExtractor  # noqa: E402
from sdcorr.match.dense import match_dense  # noqa: E402
from sdcorr.match.sparse import transfer_points  # noqa: E402

FRAMES = Frames(sd_frame=192, sd_tile=128, dino_frame=224)  # 4 overlapping tiles, 16x16 DINO
TOL = 1e-4


@pytest.fixture(scope="module")
def models(tiny_models):
    return load_folders(tiny_models["sd"], tiny_models["dino"])


@pytest.fixture(scope="module")
def ext(models):
    return extractors(models, FRAMES, torch.device("cpu"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(3, tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="module")
def reference(ext, images):
    """Raw features of every image, the reference way: plain NCHW convolutions (the library's
    CPU default is channels-last), decoder skipped (its output is unused)."""
    sd, _ = ext
    ref = ReferenceProcedure(*ext)
    sd.set_channels_last(False)
    try:
        return {i: ref.extract(p, "cat") for i, p in enumerate(images)}
    finally:
        sd.set_channels_last(True)


def _is_channels_last(module: torch.nn.Module) -> bool:
    return module.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def _sd_maps(sd, images, **cfg):
    """``{layer: (B, C, h, w)}`` of ``sd`` with some config fields replaced."""
    old = sd.config
    sd.config = replace(old, **cfg)
    try:
        return {k: v.features for k, v in sd(list(images), "cat").items()}
    finally:
        sd.config = old


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_ours_equals_reference_procedure(ext, images, reference):
    assert ext[0].channels_last and _is_channels_last(ext[0].unet)  # CPU default layout
    ours = Ours(*ext).extract_pair(images, "cat")
    diff = max_rel_diff(dict(enumerate(ours)), reference)
    assert set(diff) == {"s3", "s4", "s5", "dino", "max"}
    assert diff["max"] < TOL, diff


def test_tiles_and_images_batched_equal_one_tile_at_a_time(ext, images):
    sd, _ = ext
    batched = _sd_maps(sd, images, batch_size=64, vae_batch_size=64)  # 12 tiles, one forward
    single = _sd_maps(sd, images, batch_size=1, vae_batch_size=1)
    for name in batched:
        assert _rel(batched[name], single[name]) < TOL


def test_cpu_defaults_run_one_vae_tile_and_one_dino_image_per_forward(ext, images):
    sd, dino = ext
    assert sd.config.vae_batch_size is None and dino.config.batch_size is None
    calls = {"vae": 0, "dino": 0}

    def count(name):
        return lambda *_: calls.__setitem__(name, calls[name] + 1)

    handles = [sd.vae.encoder.register_forward_pre_hook(count("vae")),
               dino.model.register_forward_pre_hook(count("dino"))]  # fmt: skip
    try:
        sd(list(images), "cat")
        single = dino(list(images)).features
    finally:
        for h in handles:
            h.remove()
    assert calls == {"vae": 3 * 4, "dino": 3}  # 3 images of 4 tiles
    batched = ViTExtractor(dino.model, replace(dino.config, batch_size=4))(list(images))
    assert _rel(batched.features, single) < TOL


def test_early_exit_equals_full_forward(ext, images):
    sd, _ = ext
    early = _sd_maps(sd, images[:1], early_exit=True)
    full = _sd_maps(sd, images[:1], early_exit=False)
    for name in early:
        torch.testing.assert_close(early[name], full[name], rtol=0, atol=0)


def test_cached_prompt_equals_a_fresh_text_encoder_call(ext):
    sd, dino = ext
    ref = ReferenceProcedure(sd, dino)
    sd._prompt_cache.clear()
    first = sd.prompt_embedding("a photo of a dog")
    assert sd.prompt_embedding("a photo of a dog") is first  # second call is a cache hit
    torch.testing.assert_close(first, ref.text("a photo of a dog"), rtol=0, atol=0)
    assert not torch.equal(first, ref.text("a photo of a cat"))


def test_reused_features_equal_recomputed_per_pair(ext, images, models):
    pairs = workload_pairs(3, 3)
    pts = {i: keypoints(p, 5, seed=i) for i, p in enumerate(images)}
    cache_cls = FeatureCache
    dev = torch.device("cpu")
    ours = measure_workload(Ours(*ext), images, pairs, pts.__getitem__, dev, cache_cls)
    base = measure_workload(Baseline(*ext, None), images, pairs, pts.__getitem__, dev, cache_cls)
    assert ours.report["stages"]["dino"]["calls"] == 3  # each image extracted once
    assert base.report["stages"]["dino"]["calls"] == 6  # both images of every pair
    assert max_rel_diff(ours.raw, base.raw)["max"] < TOL
    assert nn_agreement(ours.flows, base.flows) == 1.0
    for m, b in zip(ours.matches, base.matches, strict=True):
        torch.testing.assert_close(m.points_b, b.points_b)


def test_chunked_similarity_equals_one_matrix(reference):
    fa, fb = fuse(reference[0], reference[1])
    pts = fa.geometry[0].grid_points(1)
    small, whole = MatchConfig(chunk=7), MatchConfig(chunk=1 << 30)
    a, b = transfer_points(fa, fb, pts, small), transfer_points(fa, fb, pts, whole)
    torch.testing.assert_close(a.points_b, b.points_b, rtol=0, atol=0)
    torch.testing.assert_close(a.scores, b.scores)
    da, db = match_dense(fa, fb, None, small), match_dense(fa, fb, None, whole)
    assert torch.equal(da.cells_a, db.cells_a)


def test_cpu_default_layout_is_channels_last_and_switchable(ext):
    sd, dino = ext
    assert sd.channels_last and _is_channels_last(sd.unet) and _is_channels_last(sd.vae.encoder)
    sd.optimize(channels_last=False)
    try:
        assert not sd.channels_last and sd.unet.conv_in.weight.is_contiguous()
        assert not _is_channels_last(sd.vae.encoder)
        sd.optimize()  # None keeps the layout
        assert not sd.channels_last
    finally:
        sd.optimize(channels_last=True)
    with Baseline(sd, dino, None).layout():  # the reference procedure runs the plain layout
        assert not _is_channels_last(sd.unet) and not _is_channels_last(sd.vae.encoder)
    assert sd.channels_last and _is_channels_last(sd.unet)  # and gives the models back
    ours = Ours(sd, dino)  # runs the layout its extractor had: channels-last
    sd.set_channels_last(False)
    with ours.layout():
        assert _is_channels_last(sd.unet) and _is_channels_last(sd.vae.encoder)
    assert not sd.channels_last and not _is_channels_last(sd.unet)
    sd.set_channels_last(True)


def test_channels_last_group_norm_is_as_accurate_as_the_nchw_kernel():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 48, 40) * 2 + 5  # group mean well off zero, as in the VAE
    w, b = torch.rand(64) + 0.5, torch.randn(64)
    ref = torch.nn.functional.group_norm(x.double(), 32, w.double(), b.double(), 1e-6)

    def err(y: torch.Tensor) -> float:
        return ((y.double() - ref).abs().max() / ref.abs().max()).item()

    plain = torch.nn.functional.group_norm(x, 32, w, b, 1e-6)
    xcl = x.contiguous(memory_format=torch.channels_last)
    ours = group_norm_channels_last(xcl, 32, w, b, 1e-6)
    assert ours.shape == x.shape and ours.is_contiguous(memory_format=torch.channels_last)
    assert err(ours) < 1e-6 and err(ours) < 3 * err(plain) + 1e-7
    no_affine = group_norm_channels_last(xcl, 8, None, None, 1e-5)
    ref8 = torch.nn.functional.group_norm(x.double(), 8, eps=1e-5)
    assert (no_affine.double() - ref8).abs().max() < 1e-5


def test_channels_last_swaps_group_norms_and_back(models):
    vae = to_channels_last(cast_copy(models.vae, torch.float32), on=False)  # (may be shared)
    norms = [m for m in vae.modules() if isinstance(m, torch.nn.GroupNorm)]
    seen = []
    norms[0].register_forward_hook(lambda m, i, o: seen.append(o.is_contiguous()))
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        plain = vae.encode(x).latent_dist.mean
        to_channels_last(vae)
        assert all(type(m) is ChannelsLastGroupNorm for m in norms)
        fast = vae.encode(x).latent_dist.mean
        to_channels_last(vae, on=False)
        assert all(type(m) is torch.nn.GroupNorm for m in norms)
    assert seen == [True, False]  # hooks kept; the swapped norm ran channels-last
    assert _rel(fast, plain) < TOL
    gn = ChannelsLastGroupNorm(4, 8)
    y = torch.randn(2, 8, 5, 5)
    assert torch.equal(gn(y), torch.nn.functional.group_norm(y, 4, gn.weight, gn.bias, gn.eps))


def test_channels_last_and_compiled_blocks_equal_plain(models, images, ext):
    sd, _ = ext
    sd.set_channels_last(False)
    try:
        plain = _sd_maps(sd, images[:1])
    finally:
        sd.set_channels_last(True)
    f32 = torch.float32
    fast = SDFeatureExtractor(
        cast_copy(models.unet, f32), cast_copy(models.vae, f32), models.text_encoder,
        models.tokenizer, models.scheduler, sd.config,
    )  # fmt: skip
    fast.optimize(channels_last=True, compile=True, backend="eager")
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    got = _sd_maps(fast, images[:1])
    for name in plain:
        assert _rel(got[name], plain[name]) < TOL


def test_compiled_vit_blocks_equal_plain(models, images, ext):
    _, dino = ext
    fast = ViTExtractor(cast_copy(models.dino, torch.float32), dino.config)
    fast.optimize(compile=True, backend="eager")
    assert fast.hooked_module()._compiled_call_impl is None  # the hooked block stays eager
    assert fast.model.encoder.layer[0]._compiled_call_impl is not None
    assert _rel(fast(images[:1]).features, dino(images[:1]).features) < TOL


def test_compile_keeps_hooked_modules_and_ancestors_eager(models):
    unet = cast_copy(models.unet, torch.float32)
    hooked = unet.get_submodule("up_blocks.0.resnets.1")
    n = compile_blocks(unet, [hooked], backend="eager")
    assert n > 0
    assert getattr(hooked, "_compiled_call_impl", None) is None
    assert unet.down_blocks[0].resnets[0]._compiled_call_impl is not None


def test_bf16_picks_mostly_the_same_neighbours(models, images, reference):
    sd, dino = extractors(models, FRAMES, torch.device("cpu"), torch.bfloat16)
    half = Ours(sd, dino).extract_pair(images[:2], "cat")
    fa, fb = fuse(half[0], half[1])
    ra, rb = fuse(reference[0], reference[1])
    agree = nn_agreement([match_dense(fa, fb)], [match_dense(ra, rb)])
    print(f"bf16 vs fp32 dense nearest-neighbour agreement: {agree:.3f}")
    assert agree > 0.5
    assert max_rel_diff(dict(enumerate(half)), reference)["max"] < 0.1


def test_half_precision_without_native_kernels_is_refused(monkeypatch):
    from sdcorr import device

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "native_dtype", lambda dt, dev: dt == torch.float32)
    for name in ("bf16", "fp16", torch.bfloat16):
        with pytest.raises(ConfigError, match="no native kernels"):
            device.resolve_dtype(name, cpu)
    assert device.resolve_dtype(None, cpu) == device.resolve_dtype("fp32", cpu) == torch.float32
    monkeypatch.setattr(device, "native_dtype", lambda dt, dev: True)
    assert device.resolve_dtype("bf16", cpu) == torch.bfloat16


def test_native_check_tells_which_path_a_bf16_convolution_takes():
    """Where the check says "not native", a bf16 convolution runs PyTorch's generic im2col
    path (the cause of the slow bf16 runs); where it says "native", oneDNN's kernel."""
    conv = torch.nn.Conv2d(8, 8, 3).to(torch.bfloat16)
    x = torch.randn(1, 8, 12, 12, dtype=torch.bfloat16)
    with torch.inference_mode(), torch.profiler.profile() as prof:
        conv(x)
    ops = {e.name for e in prof.events()}
    if native_dtype(torch.bfloat16, torch.device("cpu")):
        assert "aten::mkldnn_convolution" in ops and "aten::_slow_conv2d_forward" not in ops
    else:
        assert "aten::_slow_conv2d_forward" in ops and "aten::mkldnn_convolution" not in ops
    assert native_dtype(torch.float32, torch.device("cpu"))


def test_lean_flop_counter_matches_flop_counter_mode(models):
    x = torch.randn(1, 3, 56, 56)
    with torch.inference_mode(), flop_counter() as full:
        models.dino(pixel_values=x)
    with LeanFlopCounter() as lean, torch.inference_mode():  # (entered outside inference mode)
        models.dino(pixel_values=x)
    assert lean.get_total_flops() == full.get_total_flops() > 0
    q = torch.randn(1, 2, 64, 8)
    with LeanFlopCounter() as sdpa:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert sdpa.get_total_flops() == 4 * 64 * 64 * 8 * 2  # CPU SDPA kernel is counted


def test_floor_equals_what_ours_runs_per_image(models, ext, images):
    sd, dino = ext
    with StageClock("cpu") as clock:
        for proc_model, name in ((sd.vae.encoder, "vae"), (sd.unet, "unet"), (dino.model, "d")):
            clock.watch(proc_model, name)
        sd(images[0], "cat")
        dino(images[0])
    fl = floor_flops(models.unet, models.vae, models.dino, sd.config.layers, 11, FRAMES, 4)
    tiled = fl["tiled"]
    assert clock.flops["unet"] == tiled["unet"]
    assert clock.flops["d"] == tiled["dino"]
    assert 0.99 < clock.flops["vae"] / tiled["vae_encode"] <= 1.0  # quant_conv is not watched
    assert fl["single_pass"]["unet"] != tiled["unet"]


def test_reference_runs_the_decoder_when_asked(ext, images):
    sd, dino = ext
    decoder = build_decoder(sd.vae)
    assert sd.vae.decoder is None and decoder[1] is not None
    with StageClock("cpu") as clock:
        clock.watch(decoder[1], "vae_decode")
        clock.watch(sd.unet, "unet")
        ReferenceProcedure(sd, dino, decoder).extract(images[0], "cat")
    assert clock.calls["vae_decode"] == 4 and clock.calls["unet"] == 4
    assert clock.flops["vae_decode"] > 0


@pytest.mark.cuda
def test_cuda_fp16_channels_last_agree_with_fp32(tiny_models, images):
    dev = torch.device("cuda")
    models = load_folders(tiny_models["sd"], tiny_models["dino"])  # own copy, moved to CUDA
    sd, dino = extractors(models, FRAMES, dev)
    exact = Ours(sd, dino).extract_pair(images[:2], "cat")
    hsd, hdino = extractors(models, FRAMES, dev, torch.float16)
    hsd.optimize(channels_last=True)
    half = Ours(hsd, hdino).extract_pair(images[:2], "cat")
    ref = ReferenceProcedure(sd, dino)
    base = {i: ref.extract(p, "cat") for i, p in enumerate(images[:2])}
    assert max_rel_diff(dict(enumerate(exact)), base)["max"] < TOL
    fa, fb = fuse(*half)
    ra, rb = fuse(*exact)
    assert nn_agreement([match_dense(fa, fb)], [match_dense(ra, rb)]) > 0.5
