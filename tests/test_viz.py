"""Tests for sdcorr.viz: swap image, swap frames and GIF, PCA colours, match plot, atomic writes."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdcorr import viz
from sdcorr.image import Geometry
from sdcorr.types import FeatureMap, Matches

PALETTE = np.array([[200, 30, 30], [30, 160, 40], [20, 40, 210], [240, 200, 0], [0, 0, 0]])


def blocky(h: int, w: int, seed: int, block: int = 4) -> np.ndarray:
    """``(h, w, 3)`` uint8 made of ``block``-sized squares of a few colours (GIF-lossless)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(PALETTE), (-(-h // block), -(-w // block)))
    img = PALETTE[idx].repeat(block, 0).repeat(block, 1)[:h, :w]
    return img.astype(np.uint8)


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def identity_flow(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx, yy], axis=-1).astype(np.float64)


def flip_flow(h: int, w: int) -> np.ndarray:
    """Each B pixel matches the horizontally mirrored pixel of an A of the same size."""
    flow = identity_flow(h, w)
    flow[..., 0] = w - 1 - flow[..., 0]
    return flow


# --------------------------------------------------------------------------- swap_image
def test_swap_identity_flow_on_identical_images_returns_a() -> None:
    a = noise(20, 30, 0)
    out = viz.swap_image(a, a.copy(), identity_flow(20, 30))
    np.testing.assert_array_equal(out, a)


def test_swap_known_flip_flow_gives_flipped_a() -> None:
    a, b = noise(16, 24, 1), noise(16, 24, 2)
    out = viz.swap_image(Image.fromarray(a), b, torch.from_numpy(flip_flow(16, 24)))
    np.testing.assert_array_equal(out, a[:, ::-1])


def test_swap_rounds_to_nearest_and_clips_into_a() -> None:
    a, b = noise(8, 10, 3), noise(4, 5, 4)
    flow = np.zeros((4, 5, 2))
    flow[0, 0] = (2.4, 3.6)  # -> A pixel (x=2, y=4)
    flow[0, 1] = (-7.0, 100.0)  # -> clipped to (x=0, y=7)
    flow[0, 2] = (np.nan, 1.0)  # -> keeps B
    out = viz.swap_image(a, b, flow)
    np.testing.assert_array_equal(out[0, 0], a[4, 2])
    np.testing.assert_array_equal(out[0, 1], a[7, 0])
    np.testing.assert_array_equal(out[0, 2], b[0, 2])


def test_swap_mask_restricts_the_change() -> None:
    a, b = noise(16, 24, 5), noise(16, 24, 6)
    mask = np.zeros((16, 24), dtype=bool)
    mask[4:10, 3:20] = True
    out = viz.swap_image(a, b, flip_flow(16, 24), mask)
    np.testing.assert_array_equal(out[~mask], b[~mask])
    np.testing.assert_array_equal(out[mask], a[:, ::-1][mask])


@pytest.mark.parametrize(
    ("flow_shape", "mask_shape", "word"),
    [((16, 23, 2), None, "flow_b_to_a"), ((16, 24, 2), (16, 23), "mask_b")],
)
def test_swap_bad_shapes_raise_expected_vs_actual(flow_shape, mask_shape, word) -> None:
    mask = None if mask_shape is None else np.ones(mask_shape, bool)
    with pytest.raises(ValueError, match=rf"{word}: expected shape .* got"):
        viz.swap_image(noise(16, 24, 0), noise(16, 24, 1), np.zeros(flow_shape), mask)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        viz.swap_image(noise(16, 24, 0).astype(np.float32), noise(16, 24, 1), np.zeros(flow_shape))


# --------------------------------------------------------------------------- swap_frames
def test_swap_frames_first_and_last_frames() -> None:
    a, b = noise(20, 30, 7), noise(14, 25, 8)  # B shorter: padded with white at the bottom
    flow = np.random.default_rng(9).uniform(-2, 32, (14, 25, 2))
    mask = np.zeros((14, 25), dtype=bool)
    mask[2:12, 5:20] = True
    frames = viz.swap_frames(a, b, flow, mask, n_motion=8, n_hold=5)
    gap = 30 // 10
    assert len(frames) == 13
    assert all(f.shape == (20, 30 + gap + 25, 3) and f.dtype == np.uint8 for f in frames)
    first, last = frames[0], frames[7]
    np.testing.assert_array_equal(first[:, :30], a)
    assert (first[:, 30 : 30 + gap] == 255).all()
    np.testing.assert_array_equal(first[:14, 30 + gap :], b)
    assert (first[14:, 30 + gap :] == 255).all()
    np.testing.assert_array_equal(last[:14, 30 + gap :], viz.swap_image(a, b, flow, mask))
    np.testing.assert_array_equal(last[:, :30], a)
    assert all(f is frames[7] for f in frames[8:])
    assert not frames[-1].flags.writeable


def test_swap_frames_pixel_follows_ease_out_path() -> None:
    a = np.zeros((10, 40, 3), np.uint8)
    a[2, 3] = (255, 0, 0)  # the only red pixel, the source of B pixel (x=30, y=7)
    b = np.zeros((10, 40, 3), np.uint8)
    flow = identity_flow(10, 40)
    flow[7, 30] = (3, 2)
    mask = np.zeros((10, 40), bool)
    mask[7, 30] = True
    n, gap = 11, 6
    frames = viz.swap_frames(a, b, flow, mask, n_motion=n, n_hold=0, gap=gap, square=1)
    src, dst = np.array([3.0, 2.0]), np.array([30.0 + 40 + gap, 7.0])
    xs = []
    for k, f in enumerate(frames):
        red = (f == (255, 0, 0)).all(-1)
        red[2, 3] = k == 0  # A itself stays in the background: ignore its red pixel once moved
        ys_k, xs_k = np.nonzero(red)
        expect = np.floor(src + viz.ease_out(k / (n - 1)) * (dst - src) + 0.5)
        assert (xs_k.tolist(), ys_k.tolist()) == ([expect[0]], [expect[1]]), k
        xs.append(xs_k[0])
    assert xs[0] == 3 and xs[-1] == dst[0]
    assert np.all(np.diff(xs) >= 0) and np.diff(xs)[0] > np.diff(xs)[-1]  # fast start, soft end


def test_ease_out_values() -> None:
    t = np.linspace(0, 1, 101)
    e = viz.ease_out(t)
    assert e[0] == 0 and e[-1] == 1 and viz.ease_out(0.5) == 0.75
    assert np.all(np.diff(e) > 0) and np.all(e >= t)


def test_swap_frames_max_side_scales_images_flow_and_mask_together() -> None:
    a = blocky(64, 48, 10)
    frames = viz.swap_frames(a, a, identity_flow(64, 48), n_motion=3, n_hold=0, max_side=32)
    small_a = frames[0][:, :24]
    assert frames[0].shape == (32, 24 + 2 + 24, 3)
    np.testing.assert_array_equal(frames[-1][:, 26:], small_a)  # identity survives the rescale


# --------------------------------------------------------------------------- GIF / PNG
def read_gif(path: Path) -> tuple[list[np.ndarray], list[int], Image.Image]:
    im = Image.open(path)
    frames, durations = [], []
    for i in range(im.n_frames):
        im.seek(i)
        frames.append(np.asarray(im.convert("RGB")))
        durations.append(im.info["duration"])
    return frames, durations, im


def test_gif_frame_count_timing_and_content(tmp_path: Path) -> None:
    a, b = blocky(24, 32, 11), blocky(24, 32, 12)
    flow, mask = flip_flow(24, 32), np.zeros((24, 32), bool)
    mask[4:20, 6:26] = True
    frames = viz.swap_frames(a, b, flow, mask, n_motion=10, n_hold=10)
    runs = 1 + sum(not np.array_equal(x, y) for x, y in itertools.pairwise(frames))
    out = viz.save_gif(frames, tmp_path / "swap.gif", fps=30)
    decoded, durations, im = read_gif(out)
    assert im.n_frames == runs and im.size == (32 + 3 + 32, 24) and im.info["loop"] == 0
    assert durations[:-1] == [30] * (runs - 1)
    assert durations[-1] == 30 * (len(frames) - runs + 1) and sum(durations) == 30 * len(frames)
    np.testing.assert_array_equal(decoded[0], frames[0])  # few colours: palette is lossless
    np.testing.assert_array_equal(decoded[-1][:, 35:], viz.swap_image(a, b, flow, mask))


def test_gif_merges_identical_runs_and_hold_ms(tmp_path: Path) -> None:
    x, y = blocky(8, 8, 1), blocky(8, 8, 2)
    out = viz.save_gif([x, x.copy(), y, y, y], tmp_path / "a.gif", fps=20, hold_ms=1000)
    decoded, durations, im = read_gif(out)
    assert im.n_frames == 2 and durations == [100, 1000]
    np.testing.assert_array_equal(decoded[1], y)
    _, durations, _ = read_gif(viz.save_gif([x, x, y], tmp_path / "b.gif", fps=30))
    assert durations == [60, 30]


def test_gif_of_an_empty_mask_is_one_still_frame(tmp_path: Path) -> None:
    a, b = blocky(12, 16, 3), blocky(12, 16, 4)
    frames = viz.swap_frames(a, b, flip_flow(12, 16), np.zeros((12, 16), bool), 5, 5)
    assert all(np.array_equal(f, frames[0]) for f in frames)
    decoded, durations, im = read_gif(viz.save_gif(frames, tmp_path / "still.gif"))
    assert im.n_frames == 1 and durations == [300]
    np.testing.assert_array_equal(decoded[0], frames[0])


def test_save_png_roundtrip(tmp_path: Path) -> None:
    img = noise(9, 13, 3)
    out = viz.save_png(img, tmp_path / "x.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), img)


@pytest.mark.parametrize("kind", ["gif", "png"])
def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch, kind: str) -> None:
    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    img = blocky(8, 8, 0)
    with pytest.raises(RuntimeError, match="disk full"):
        if kind == "gif":
            viz.save_gif([img, blocky(8, 8, 1)], tmp_path / "out.gif")
        else:
            viz.save_png(img, tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- pca_rgb
def test_pca_joint_fit_gives_same_colours_to_same_features() -> None:
    torch.manual_seed(0)
    f1 = torch.randn(1, 8, 6, 10)
    f2 = torch.randn(1, 8, 6, 10)
    f2[..., :5] = f1[..., :5]  # left halves share features, right halves differ
    p1, p2 = viz.pca_rgb([f1, f2])
    assert p1.shape == (6, 10, 3) and p1.dtype == np.uint8
    np.testing.assert_array_equal(p1[:, :5], p2[:, :5])
    q1, q2 = viz.pca_rgb(torch.cat([f1, f1]))
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(viz.pca_rgb([f1, f2])[0], p1)  # deterministic
    geom = (Geometry(60, 36, frame=60, stride=6),)  # a 10 x 10 grid; only the type matters here
    fm = FeatureMap(torch.randn(1, 8, 10, 10), geom)
    np.testing.assert_array_equal(viz.pca_rgb(fm)[0], viz.pca_rgb(fm.features)[0])


def test_pca_recovers_a_known_3d_signal() -> None:
    h, w, c = 12, 16, 20
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    signal = torch.stack([3 * xx, 2 * yy, xx * yy]).reshape(3, -1)  # uncorrelated, decreasing var
    basis = torch.linalg.qr(torch.randn(c, 3, generator=torch.Generator().manual_seed(1)))[0]
    feats = (basis @ signal).reshape(1, c, h, w) + 0.01 * torch.randn(1, c, h, w)
    (img,) = viz.pca_rgb(feats)
    for k in range(3):
        r = np.corrcoef(img[..., k].ravel().astype(float), signal[k].numpy())[0, 1]
        assert abs(r) > 0.99, (k, r)


def test_pca_mask_excludes_cells_from_fit_and_picture() -> None:
    torch.manual_seed(2)
    f = torch.randn(1, 6, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:, :4] = True
    g = f.clone()
    g[..., 4:] = 100 * torch.randn(1, 6, 8, 4)  # outliers outside the mask
    (p,), (q,) = viz.pca_rgb(f, mask=mask), viz.pca_rgb(g, mask=[mask])
    assert (p[:, 4:] == 0).all()
    np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match="expected shape"):
        viz.pca_rgb(f, mask=torch.ones(7, 8, dtype=torch.bool))


# --------------------------------------------------------------------------- plot_matches
def test_plot_matches_size_lines_and_png(tmp_path: Path) -> None:
    a, b = np.full((40, 60, 3), 255, np.uint8), np.full((20, 25, 3), 255, np.uint8)
    pts_a = torch.tensor([[10.0, 10.0], [50.0, 30.0], [30.0, 20.0]])
    pts_b = torch.tensor([[5.0, 5.0], [20.0, 15.0], [12.0, 10.0]])
    m = Matches(pts_a, pts_b, torch.tensor([0.9, 0.8, 0.1]))
    out = viz.plot_matches(a, b, m, path=tmp_path / "m.png", max_lines=2)
    assert out.shape == (40, 60 + 50, 3) and out.dtype == np.uint8  # B scaled to height 40
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.png").convert("RGB")), out)
    assert (out[10, 10] != 255).any() and (out[30, 50] != 255).any()  # dots at A ends
    assert (out[10, 60 + 10] != 255).any()  # B end of match 0 (scaled x2)
    assert (out[20, 30] == 255).all()  # match 2 has the lowest score: not drawn
    empty = Matches(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0))
    assert (viz.plot_matches(a, b, empty) == 255).all()


def test_import_does_not_import_matplotlib() -> None:
    code = "import sys, sdcorr.viz; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- swap GIF from a flow
def dense_flow(size_a: tuple[int, int], size_b: tuple[int, int], seed: int = 0):
    """A random :class:`DenseFlow` on a 16x16 grid (224 frame, 14-px cells) of A and B."""
    from sdcorr.match.dense import DenseFlow

    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, 16, (16, 16, 2), generator=g).float()
    valid = torch.rand(16, 16, generator=g) > 0.3
    geo_a, geo_b = (Geometry(w, h, 224, 14) for w, h in (size_a, size_b))
    return DenseFlow(cells, torch.zeros(16, 16), valid, geo_a, geo_b)


@pytest.mark.parametrize("max_side", [None, 90])
def test_swap_frames_from_flow_equals_the_full_size_route(max_side) -> None:
    a, b = blocky(200, 300, 1), blocky(330, 250, 2)
    flow = dense_flow((300, 200), (250, 330))
    px, valid = flow.to_pixels("nearest").numpy(), flow.valid_pixels().numpy()
    want = viz.swap_frames(a, b, px, mask_b=valid, max_side=max_side, n_motion=6, n_hold=1)
    got = viz.swap_frames_from_flow(a, b, flow, max_side, n_motion=6, n_hold=1)
    assert len(got) == len(want) == 7
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_swap_gif_memory_does_not_grow_with_input_megapixels() -> None:
    """Peak traced memory (numpy) for a 12 MP pair is that of a 2 MP pair at the same max_side:
    no per-pixel map of the full-size input is built (the old route built several)."""
    import tracemalloc

    def peak(w: int, h: int) -> int:
        a = Image.new("RGB", (w, h), (200, 30, 30))  # decoded inputs live in PIL (not traced)
        b = Image.new("RGB", (w, h), (30, 30, 200))
        flow = dense_flow((w, h), (w, h))
        tracemalloc.start()
        try:
            frames = viz.swap_frames_from_flow(a, b, flow, 160, n_motion=3, n_hold=0)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert frames[0].shape == (120, 160 + 16 + 160, 3)

    small, large = peak(1632, 1224), peak(4000, 3000)  # 2.0 MP and 12 MP
    assert large < 1.3 * small + 2**20, (small, large)
    assert large < 16 * 2**20  # the old route's float64 flow alone was 12e6 * 16 B = 192 MB


# ---------------------------------------------------------------------------- canvas, markers
def test_side_by_side_places_both_images_top_aligned_with_gap_and_fill() -> None:
    a, b = noise(3, 2, 0), noise(5, 4, 1)
    out = viz.side_by_side(a, b, gap=2, fill=7)
    assert out.shape == (5, 2 + 2 + 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:3, :2], a)
    np.testing.assert_array_equal(out[:, 4:], b)
    assert (out[:, 2:4] == 7).all() and (out[3:, :2] == 7).all()
    swapped = viz.side_by_side(b, a)  # no gap; white by default
    assert swapped.shape == (5, 6, 3) and (swapped[3:, 4:] == 255).all()
    np.testing.assert_array_equal(swapped[:3, 4:], a)


@pytest.mark.parametrize("xy", [(0.0, 0.0), (39.0, 29.0), (12.4, 7.6), (-3.0, 50.0)])
def test_marker_is_found_where_it_was_drawn(xy) -> None:
    img = noise(30, 40, 2) // 2  # no pure magenta
    assert viz.marker_centre(img) is None
    marked = viz.draw_marker(img, xy)
    expect = (int(np.clip(round(xy[0]), 0, 39)), int(np.clip(round(xy[1]), 0, 29)))
    assert viz.marker_centre(marked) == expect
    assert tuple(marked[expect[1], 0]) == viz.MARKER_RGB and (img == noise(30, 40, 2) // 2).all()


def test_heatmap_colours_each_pixel_by_its_cells_scaled_value() -> None:
    import matplotlib

    geo = Geometry(40, 20, frame=40, stride=10)  # 4 x 4 grid, content rows 1 and 2
    sim = torch.arange(16.0).view(4, 4)  # content cells 4..11: 4 -> 0 and 11 -> 1
    img = noise(20, 40, 3)
    heat = viz.heatmap(img, sim, geo, alpha=1.0)
    turbo = matplotlib.colormaps["turbo"]
    np.testing.assert_array_equal(heat[0, 0], np.round(np.array(turbo(0.0)[:3]) * 255))
    np.testing.assert_array_equal(heat[19, 39], np.round(np.array(turbo(1.0)[:3]) * 255))
    half = viz.heatmap(img, sim, geo, alpha=0.5)
    assert np.abs(half.astype(int) - (img.astype(int) + heat) / 2).max() <= 1


def _padded_pair(outlier: float) -> tuple[FeatureMap, FeatureMap]:
    """A 40x20 image (4x4 grid: rows 0 and 3 are padding) and B = A; padding cells hold
    ``outlier`` times noise."""
    geo = (Geometry(40, 20, frame=40, stride=10),)
    f = torch.randn(1, 6, 4, 4, generator=torch.Generator().manual_seed(3))
    f[:, :, [0, 3]] *= outlier
    return FeatureMap(f, geo), FeatureMap(f.clone(), geo)


def test_pca_images_fit_content_cells_only_and_lift_them_to_pixels(tmp_path: Path) -> None:
    fa, fb = _padded_pair(1.0)
    a, b = viz.pca_images(fa, fb)
    assert a.shape == b.shape == (20, 40, 3)
    np.testing.assert_array_equal(a, b)  # same features, same colours
    np.testing.assert_array_equal(a, viz.pca_images(*_padded_pair(1000.0))[0])  # padding ignored
    (grid,) = viz.pca_rgb(fa, mask=fa.geometry[0].content_mask())
    np.testing.assert_array_equal(a, fa.geometry[0].grid_to_pixels(grid).numpy())
    short = FeatureMap(fb.features, (Geometry(40, 10, frame=40, stride=10),))
    panel = viz.pca_panel(fa, short)
    assert panel.shape == (20, 80, 3) and (panel[10:, 40:] == 0).all()  # black below B
    np.testing.assert_array_equal(
        np.asarray(Image.open(viz.save_pca(tmp_path / "p.png", fa, short))), panel
    )
