"""Adaptive flip alignment: distances on constructed maps, the pipeline with tiny and real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdcorr.config import get_preset
from sdcorr.flip import (
    decide,
    masked_distance,
    mirror_image,
    mirror_mask,
    mirror_points,
    mutual_nn_distance,
)
from sdcorr.image import Geometry
from sdcorr.pipeline import SDDino
from sdcorr.types import FeatureMap

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"


def test_mirror_points_follow_the_mirrored_pixels() -> None:
    rng = np.random.default_rng(0)
    img = (rng.random((30, 41, 3)) * 255).astype(np.uint8)
    mirrored = np.asarray(mirror_image(img))
    pts = torch.tensor([[0.0, 0.0], [40.0, 29.0], [13.0, 7.0]])
    for (x, y), (xm, ym) in zip(
        pts.long().tolist(), mirror_points(pts, 41).long().tolist(), strict=True
    ):
        assert (img[y, x] == mirrored[ym, xm]).all()
    assert torch.equal(mirror_points(mirror_points(pts, 41), 41), pts.double())
    mask = img[..., 0] > 128
    assert (mirror_mask(mask) == mask[:, ::-1]).all()
    assert torch.equal(mirror_mask(torch.as_tensor(mask)), torch.as_tensor(mask).flip(-1))


def _maps(seed: int = 0) -> tuple[FeatureMap, FeatureMap]:
    """Random features of a square (unpadded) image and of its mirror. Independent draws: a
    mirror's tokens are not its source's tokens moved around (each patch is mirrored too), and
    both criteria ignore where a token sits, so a pure permutation would be indistinguishable."""
    g = torch.Generator().manual_seed(seed)
    geo = Geometry(224, 224, 224, 14)
    f = torch.randn(2, 8, 16, 16, generator=g)
    return FeatureMap(f[:1], (geo,)), FeatureMap(f[1:], (geo,))


def test_a_tie_does_not_flip(tiny_pipe) -> None:
    """Issue 19: the mirror wins only when strictly closer. A left-right symmetric source (its
    mirror has the same features) and empty masks on both sides (no distance either way) keep
    the original view."""
    fa, fb = _maps()
    d = decide(fa, fb, fa, fb)
    assert d.distance == d.distance_flipped and not d.flipped
    empty = np.zeros((224, 224), bool)
    d = decide(fa, fb, fb, fa, empty, empty)
    assert d.distance == d.distance_flipped == float("inf") and not d.flipped
    half = np.asarray(Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((100, 150)))
    symmetric = Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1))
    other = Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB").resize((200, 150))
    decision = tiny_pipe.flip_decision(symmetric, other)
    assert decision.distance == decision.distance_flipped and not decision.flipped


@pytest.mark.parametrize("masked", [False, True])
def test_decision_prefers_the_view_that_matches(masked: bool) -> None:
    fa, fa_mirror = _maps()
    mask = np.zeros((224, 224), bool)
    mask[40:180, 30:150] = True  # asymmetric: the mirror's mask is elsewhere
    ma = mask if masked else None
    mb = mask[:, ::-1] if masked else None
    d = decide(fa, fa_mirror, fa_mirror, fa_mirror, ma, mb)  # B is the mirror of A
    assert d.flipped and d.distance_flipped == pytest.approx(0, abs=1e-3) and d.distance > 0.1
    assert d.masked == masked
    d = decide(fa, fa, fa_mirror, fa, ma, mask if masked else None)  # B is A
    assert not d.flipped and d.distance == pytest.approx(0, abs=1e-3)


def test_distances_ignore_what_the_masks_exclude() -> None:
    fa, fb = _maps()
    # B equals A inside the left half only: the masked distance over that half is zero
    half = fa.features.clone()
    half[..., 8:] = fb.features[..., 8:]
    fb_half = FeatureMap(half, fa.geometry)
    left = np.zeros((224, 224), bool)
    left[:, :100] = True
    assert masked_distance(fa, fb_half, left, left) == pytest.approx(0, abs=1e-3)
    assert masked_distance(fa, fb_half, None, None) > 0.1  # no mask: the whole image
    assert mutual_nn_distance(fa, fa) == pytest.approx(0, abs=1e-3)
    assert mutual_nn_distance(fa, fb) > 0.1


# ---------------------------------------------------------------------------- pipeline
class _Counting:
    """Wraps an extractor and counts the images it sees."""

    def __init__(self, inner) -> None:
        self.inner, self.images = inner, 0

    def __call__(self, images):
        self.images += len(images)
        return self.inner(images)


@pytest.fixture(scope="module")
def tiny_pipe(tiny_models) -> SDDino:
    from dataclasses import replace

    cfg = get_preset("dino")
    cfg = replace(cfg, dino=replace(cfg.dino, frame=224))
    return SDDino.from_pretrained(config=cfg, dino_model=str(tiny_models["dino"]), device="cpu")


@pytest.mark.parametrize("masks", [None, "auto", "given"])
def test_tiny_pipeline_flips_for_a_mirror_and_not_for_itself(tiny_pipe, masks) -> None:
    img = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((200, 150))
    mirrored = mirror_image(img)
    given = np.zeros((150, 200), bool)
    given[20:140, 30:120] = True
    ma, mb = (given, given[:, ::-1]) if masks == "given" else (masks, masks)
    pipe = SDDino(tiny_pipe.config, dino=_Counting(tiny_pipe.dino), cache_size=8)
    geo = pipe.features(img, img)[0].geometry[0]
    pts = geo.grid_points(3)
    m = pipe.match_points(img, mirrored, pts, mask_a=ma, mask_b=mb, flip_align=True)
    assert m.flipped and torch.equal(m.points_a, pts.float())
    # the mirror's features are identical to B's: every point whose mirror position is a
    # candidate cell of B (inside B's mask) lands exactly there
    cells_b = geo.to_cell(mirror_points(pts, 200))
    expected = geo.cell_to_original(cells_b).float()
    resolved_b = pipe.foreground_mask(mirrored) if masks == "auto" else mb
    ok = torch.ones(len(pts), dtype=torch.bool)
    if resolved_b is not None:
        ok = geo.mask_to_grid(np.ascontiguousarray(resolved_b))[cells_b[:, 1], cells_b[:, 0]]
    assert ok.any() and torch.equal(m.points_b[ok], expected[ok])
    assert pipe.dino.images == 2  # A, then mirror(A) once (B has the same pixels)
    again = pipe.match_points(img, mirrored, pts, mask_a=ma, mask_b=mb, flip_align=True)
    assert pipe.dino.images == 2 and torch.equal(again.points_b, m.points_b)
    same = pipe.match_points(img, img, pts, mask_a=ma, mask_b=ma, flip_align=True)
    assert not same.flipped and pipe.dino.images == 2
    assert not pipe.match_points(img, mirrored, pts, mask_a=ma, mask_b=mb).flipped  # option off
    # the same from raw per-image features (what a feature cache holds)
    ra, rb = pipe.extract([img, mirrored])
    (rm,) = pipe.extract([img], mirrored=True)
    raw = pipe.match_raw(ra, rb, pts, mirror=rm, mask_a=ma, mask_b=mb, flip_align=True)
    assert raw.flipped and torch.equal(raw.points_b, m.points_b)
    with pytest.raises(ValueError, match="mirror"):
        pipe.match_raw(ra, rb, pts, flip_align=True)


def test_dense_flow_with_flip_points_into_the_unmirrored_source(tiny_pipe) -> None:
    img = Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB").resize((180, 150))
    flow = tiny_pipe.match_dense(img, mirror_image(img), flip_align=True)
    px = flow.to_pixels()  # (H, W, 2) positions in A for every pixel of B = mirror(A)
    # B's features are those of the mirror, so every B cell matches its own cell of the
    # mirror, whose centre is reported at its mirror position in A: exactly, to float error
    # (half a frame pixel off, 0.4 px here, is a bug)
    gb = flow.geometry_b
    centres = gb.cell_to_original(gb.to_cell(gb.pixel_centres()))
    expected = mirror_points(centres, 180).view(150, 180, 2)
    assert (px.double() - expected).abs().max() <= 1e-3
    expected_x = 179 - torch.arange(180.0).expand(150, 180)
    cell = flow.geometry_a.stride * 180 / flow.geometry_a.resized[0]  # one cell in A's pixels
    plain = tiny_pipe.match_dense(img, mirror_image(img))
    assert (plain.to_pixels()[..., 0] - expected_x).abs().mean() > 2 * cell


# ---------------------------------------------------------------------------- real weights
@pytest.fixture(scope="module")
def real_pipe(real_dino_pipe) -> SDDino:
    """The ``dino`` preset on real DINOv2-S (the session's shared extractor)."""
    return real_dino_pipe()


@pytest.mark.realweights
@pytest.mark.slow
def test_real_dinov2_mirror_is_detected_and_keypoints_land_on_their_mirror(
    real_pipe, spair_root
) -> None:
    import json

    pair = sorted((spair_root / "PairAnnotation" / "test").glob("*.json"))[0]
    ann = json.loads(pair.read_text())
    path = spair_root / "JPEGImages" / ann["category"] / ann["src_imname"]
    img = Image.open(path).convert("RGB")
    kps = torch.tensor(ann["src_kps"], dtype=torch.float64).clamp(max=img.width - 1)
    kps[:, 1] = kps[:, 1].clamp(max=img.height - 1)
    m = real_pipe.match_points(img, mirror_image(img), kps, flip_align=True)
    assert m.flipped
    geo = real_pipe.features(img, img)[0].geometry[0]
    cell = geo.stride * img.width / geo.resized[0]
    err = (m.points_b.double() - mirror_points(kps, img.width)).abs().max()
    assert err <= cell, f"max error {err:.1f} px > one cell ({cell:.1f} px)"
    d_mirror = real_pipe.flip_decision(img, mirror_image(img))
    d_self = real_pipe.flip_decision(img, img)
    print(f"{len(kps)} keypoints, max error {err:.2f} px (cell {cell:.2f} px); distances "
          f"mirror {d_mirror.distance:.3f}/{d_mirror.distance_flipped:.3f}, "
          f"self {d_self.distance:.3f}/{d_self.distance_flipped:.3f}")  # fmt: skip
    assert not d_self.flipped
    assert not real_pipe.match_points(img, img, kps, flip_align=True).flipped
