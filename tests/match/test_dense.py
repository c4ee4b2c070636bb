"""Dense B → A correspondence and warps with oracle features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdcorr.match.dense import match_dense, resample, warp
from sdcorr.testing import PositionOracle

N, S = 16, 14
IMG = np.zeros((N * S, N * S, 3), np.uint8)


def _pair(transform):
    fm = PositionOracle(frame=N * S, stride=S, transform=transform)([IMG, IMG])
    return fm[0], fm[1]


def _grid(n: int) -> torch.Tensor:
    r = torch.arange(n)
    return torch.stack(torch.meshgrid(r, r, indexing="xy"), -1).float()  # (n, n, 2) (col, row)


def test_shift_flip_and_scale_recovered_on_the_grid() -> None:
    fa, fb = _pair(lambda p: p - torch.tensor([2.0 * S, 0.0], dtype=torch.float64))
    flow = match_dense(fa, fb)
    cells = _grid(N)
    ok = cells[..., 0] >= 2
    assert torch.equal(flow.cells_a[ok], (cells - torch.tensor([2.0, 0.0]))[ok])

    fa, fb = _pair(lambda p: torch.stack([N * S - 1 - p[:, 0], p[:, 1]], 1))
    flow = match_dense(fa, fb)
    assert torch.equal(flow.cells_a[..., 0], N - 1 - cells[..., 0])

    fa, fb = _pair(lambda p: 6.5 + (p - 6.5) / 2)
    flow = match_dense(fa, fb)
    even = (cells % 2 == 0).all(-1)
    assert torch.equal(flow.cells_a[even], cells[even] / 2)


def test_pixel_flow_and_warp_rebuild_b_from_a() -> None:
    fa, fb = _pair(lambda p: torch.stack([N * S - 1 - p[:, 0], p[:, 1]], 1))
    flow = match_dense(fa, fb)
    px = flow.to_pixels("nearest")
    assert px.shape == (N * S, N * S, 2)
    # each B pixel maps to the centre of the mirrored cell in A
    x = torch.arange(N * S)
    mirrored_cell = N - 1 - x // S
    assert torch.equal(px[0, :, 0], (mirrored_cell * S + (S - 1) / 2).float())
    ramp = np.tile(np.arange(N * S, dtype=np.uint8)[None, :, None], (N * S, 1, 3))
    out = warp(ramp, px, mode="nearest")
    assert out.shape == ramp.shape
    assert (np.abs(out[..., 0].astype(int) - (N * S - 1 - np.arange(N * S))[None]) <= S // 2).all()
    bil = flow.to_pixels("bilinear")
    assert torch.allclose(bil[S // 2 :: S, S // 2 :: S], px[S // 2 :: S, S // 2 :: S], atol=0.51)


def test_resampled_dense_grid_and_masks() -> None:
    fa, fb = _pair(None)
    flow = match_dense(fa, fb, grid=40)
    assert flow.cells_a.shape == (40, 40, 2)
    assert torch.equal(flow.cells_a, _grid(40))  # identity stays identity on a denser grid
    mask_b = np.zeros((N * S, N * S), bool)
    mask_b[: N * S // 2] = True
    flow = match_dense(fa, fb, mask_b=mask_b)
    assert flow.valid[: N // 2].all() and not flow.valid[N // 2 :].any()
    assert flow.valid_pixels()[: N * S // 2].all()


def test_156_grid_fits_in_chunks() -> None:
    g = torch.Generator().manual_seed(0)
    from sdcorr.image import Geometry
    from sdcorr.types import FeatureMap

    geo = (Geometry(500, 400, 840, 14),)
    fa = FeatureMap(torch.randn(1, 16, 60, 60, generator=g), geo)
    fb = FeatureMap(torch.randn(1, 16, 60, 60, generator=g), geo)
    flow = match_dense(fa, fb, grid=156)
    assert flow.cells_a.shape == (156, 156, 2) and flow.geometry_b.grid == (156, 156)
    assert resample(fa, 156).features.shape[-1] == 156
    # padding cells of A are never chosen
    content = flow.geometry_a.content_mask()
    c = flow.cells_a.long()
    assert content[c[..., 1], c[..., 0]].all()


def test_dense_pixels_use_the_reference_cell_rule_on_a_non_square_image() -> None:
    # identity on a 500 x 333 image: pixel (x, y) of B reads cell int(n / frame * x_frame) with
    # x_frame = x * frame / 500 + pad, and maps to that cell's centre in A by the same rule
    w, h, frame = 500, 333, N * S
    img = np.zeros((h, w, 3), np.uint8)
    fm = PositionOracle(frame=frame, stride=S)([img, img])
    fa, fb = fm[0], fm[1]
    px = match_dense(fa, fb).to_pixels("nearest")
    s, pad_y = frame / w, (frame - round(frame * h / w)) // 2
    ys, xs = np.mgrid[0:h, 0:w]
    cx = (N / frame * (xs * s)).astype(int)
    cy = (N / frame * (ys * s + pad_y)).astype(int)
    ex = (S * cx + 6.5) / s
    ey = (S * cy + 6.5 - pad_y) / s
    ok = (ey >= 0) & (ey <= h - 1) & (ex <= w - 1)
    assert ok.mean() > 0.9
    assert np.allclose(px[..., 0].numpy()[ok], ex[ok], atol=1e-3)
    assert np.allclose(px[..., 1].numpy()[ok], ey[ok], atol=1e-3)


def test_flow_arrays_and_npz_carry_the_mirror_at_every_pixel(tmp_path, monkeypatch) -> None:
    from sdcorr.match.dense import save_flow

    fa, fb = _pair(lambda p: torch.stack([N * S - 1 - p[:, 0], p[:, 1]], 1))
    mask_b = np.zeros((N * S, N * S), bool)
    mask_b[:, : N * S // 2] = True
    flow = match_dense(fa, fb, mask_b=mask_b)
    path = save_flow(tmp_path / "flow.npz", flow)
    with np.load(path) as z:
        arrays = dict(z)
    assert sorted(arrays) == ["flow", "score", "size_a", "size_b", "valid"]
    assert arrays["flow"].shape == (N * S, N * S, 2) and arrays["flow"].dtype == np.float32
    mirrored_x = (N - 1 - np.arange(N * S) // S) * S + (S - 1) / 2  # centre of the mirror cell
    np.testing.assert_array_equal(arrays["flow"][..., 0], np.tile(mirrored_x, (N * S, 1)))
    np.testing.assert_array_equal(arrays["valid"], mask_b)
    assert arrays["score"].dtype == np.float32 and np.allclose(arrays["score"], 1, atol=1e-5)
    assert arrays["size_a"].tolist() == arrays["size_b"].tolist() == [N * S, N * S]
    for key, value in flow.arrays().items():
        np.testing.assert_array_equal(value, arrays[key])

    def broken(file, **arrays):
        file.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_flow(tmp_path / "other.npz", flow)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.npz"]
