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
from sdcorr.features.accel import compile_blocks  # noqa: E402
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
    """Raw features of every image, the reference way (decoder skipped: output unused)."""
    ref = ReferenceProcedure(*ext)
    return {i: ref.extract(p, "cat") for i, p in enumerate(images)}


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


def test_channels_last_and_compiled_blocks_equal_plain(models, images, ext):
    sd, _ = ext
    plain = _sd_maps(sd, images[:1])
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
