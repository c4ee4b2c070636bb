"""Sparse keypoint transfer with oracle features that encode a known transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdcorr.config import MatchConfig
from sdcorr.errors import PointsError
from sdcorr.match.sparse import nearest, point_similarity, transfer_points
from sdcorr.testing import PositionOracle

N, S = 16, 14  # 16 x 16 cells of 14 px on a 224 frame
IMG = np.zeros((N * S, N * S, 3), np.uint8)


def _pair(transform, **kw):
    fm = PositionOracle(frame=N * S, stride=S, transform=transform, **kw)([IMG, IMG])
    return fm[0], fm[1]


def _cells(lo: int = 0, hi: int = N) -> torch.Tensor:
    r = torch.arange(lo, hi)
    return torch.stack(torch.meshgrid(r, r, indexing="xy"), -1).reshape(-1, 2)


def _centres(fm, cells):
    return fm.geometry[0].cell_to_original(cells)


def _frame_shift(dx: float, dy: float):
    return lambda p: p - torch.tensor([dx, dy], dtype=torch.float64)


@pytest.mark.parametrize("k", [(2, 0), (0, -3), (1, 1)])
def test_shift_by_whole_cells_is_recovered_exactly(k) -> None:
    fa, fb = _pair(_frame_shift(k[0] * S, k[1] * S))
    cells = _cells()
    target = cells + torch.tensor(k)
    keep = ((target >= 0) & (target < N)).all(1)
    m = transfer_points(fa, fb, _centres(fa, cells[keep]))
    assert torch.equal(m.points_b.double(), _centres(fb, target[keep]).float().double())
    assert len(m) == int(keep.sum())


def test_horizontal_flip_is_recovered_exactly() -> None:
    fa, fb = _pair(lambda p: torch.stack([N * S - 1 - p[:, 0], p[:, 1]], 1))
    cells = _cells()
    m = transfer_points(fa, fb, _centres(fa, cells))
    flipped = torch.stack([N - 1 - cells[:, 0], cells[:, 1]], 1)
    assert torch.equal(m.points_b, _centres(fb, flipped).float())


def test_scale_2x_is_recovered_exactly() -> None:
    fa, fb = _pair(lambda p: 6.5 + (p - 6.5) / 2)  # B shows A magnified 2x
    cells = _cells(0, N // 2)
    m = transfer_points(fa, fb, _centres(fa, cells))
    # B magnifies A 2x about the first cell centre: A cell c appears at B cell 2c
    assert torch.equal(m.points_b, _centres(fb, 2 * cells).float())


@pytest.mark.parametrize("delta", [0.3, -0.2, 0.45])
def test_soft_argmax_recovers_a_sub_cell_shift(delta: float) -> None:
    fa, fb = _pair(_frame_shift(delta * S, -delta * S), sigma=3.0 * S, spacing=S)
    cells = _cells(4, N - 4)
    pts = _centres(fa, cells)
    hard = transfer_points(fa, fb, pts)
    soft = transfer_points(fa, fb, pts, MatchConfig(soft_argmax=True, window=5, beta=0.02))
    expected = pts + torch.tensor([delta * S, -delta * S])
    err_soft = ((soft.points_b - expected) / S).abs().max()
    err_hard = ((hard.points_b - expected) / S).abs().max()
    assert err_soft < 0.1
    assert err_hard > 0.15  # the hard argmax alone cannot see the sub-cell shift


def test_mutual_check_flags_many_to_one_matches() -> None:
    fa, fb = _pair(
        lambda p: 6.5 + (p - 6.5) / 2
    )  # B magnifies A: B cells 2c and 2c+1 both ~ A cell c
    cells = _cells(0, N // 2)
    m = transfer_points(fb, fa, _centres(fb, cells), MatchConfig(mutual=True))
    # B cell q matches A cell ~q/2; the reverse match of that A cell is B cell 2*(q/2): only even q
    even = ((cells % 2) == 0).all(1)
    assert torch.equal(m.mutual, even)
    assert transfer_points(fb, fa, _centres(fb, cells)).mutual.all()


def test_mask_restricts_candidates() -> None:
    fa, fb = _pair(None)
    mask_b = np.zeros((N * S, N * S), bool)
    mask_b[:, : 8 * S] = True  # left half of B only
    cells = _cells()
    m = transfer_points(fa, fb, _centres(fa, cells), mask_b=mask_b)
    assert (m.points_b[:, 0] < 8 * S).all()
    inside = cells[:, 0] < 8
    assert torch.equal(m.points_b[inside], m.points_a[inside])
    with pytest.raises(PointsError, match="selects no feature cell"):
        transfer_points(fa, fb, _centres(fa, cells), mask_b=np.zeros_like(mask_b))


def test_points_outside_a_are_rejected() -> None:
    fa, fb = _pair(None)
    with pytest.raises(PointsError, match="outside"):
        transfer_points(fa, fb, [[10.0, 10.0], [300.0, 5.0]])


def test_chunked_nearest_equals_unchunked() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(100, 8, generator=g), dim=1)
    bank = torch.nn.functional.normalize(torch.randn(300, 8, generator=g), dim=1)
    valid = torch.rand(300, generator=g) > 0.3
    i1, s1 = nearest(q, bank, valid, chunk=7)
    i2, s2 = nearest(q, bank, valid, chunk=4096)
    assert torch.equal(i1, i2) and torch.allclose(s1, s2, atol=1e-6)
    assert valid[i1].all()
    assert torch.equal(i2, (q @ bank.t()).masked_fill(~valid, -2).argmax(1))


def test_l2_nearest_is_the_brute_force_minimum_and_ties_go_to_the_first_row() -> None:
    g = torch.Generator().manual_seed(1)
    q, bank = torch.randn(50, 6, generator=g), torch.randn(80, 6, generator=g)
    bank[40] = bank[7]  # an exact duplicate: the first copy must win
    q[0] = bank[7]
    idx, dist = nearest(q, bank, chunk=9, metric="l2")
    full = torch.cdist(q, bank)
    assert torch.equal(idx, full.argmin(1)) and idx[0] == 7 and dist[0] == 0
    assert torch.allclose(dist, full.min(1).values)
    valid = torch.ones(80, dtype=torch.bool)
    valid[7] = False  # the nearest row excluded: its duplicate takes over
    assert nearest(q[:1], bank, valid, metric="l2")[0].tolist() == [40]
    unit_bank = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert nearest(torch.tensor([[1.0, 0.0]]), unit_bank)[0].tolist() == [1]  # cosine tie
    with pytest.raises(ValueError, match="metric"):
        nearest(q, bank, metric="dot")


def test_point_similarity_peaks_at_the_transferred_match() -> None:
    fa, fb = _pair(_frame_shift(2 * S, -S))
    point = (60.0, 100.0)
    sim = point_similarity(fa, fb, point)
    assert sim.shape == (N, N)
    m = transfer_points(fa, fb, [list(point)], MatchConfig(content_only=False))
    col, row = fb.geometry[0].to_cell(m.points_b.double())[0].tolist()
    assert float(sim[row, col]) == float(m.scores[0]) == pytest.approx(float(sim.max()))
    cell = fa.geometry[0].to_cell(torch.tensor([point]))[0] + torch.tensor([2, -1])
    assert (col, row) == tuple(cell.tolist())  # the known shift
    with pytest.raises(PointsError, match="outside"):
        point_similarity(fa, fb, (300.0, 5.0))


def _ref_cell_centre(x: float, y: float, w: int, h: int, n: int = N, frame: int = N * S):
    """The reference, written out: keypoint → cell ``int(n / frame * (x * frame / max(W, H) +
    pad))``, prediction ``14 c + 6.5`` mapped back by the same rule."""
    long = max(w, h)
    pad_x = int((frame - round(frame * w / long)) / 2) if w < h else 0
    pad_y = int((frame - round(frame * h / long)) / 2) if h < w else 0
    cx = int(n / frame * (x * frame / long + pad_x))
    cy = int(n / frame * (y * frame / long + pad_y))
    return ((S * cx + 6.5 - pad_x) * long / frame, (S * cy + 6.5 - pad_y) * long / frame)


@pytest.mark.parametrize("size", [(500, 333), (300, 470)])
def test_identity_transfer_lands_on_the_reference_cell_centre(size) -> None:
    # A and B are the same non-square image: every point lands on its own cell's centre, where
    # the reference puts it (no half-pixel terms), with x and y kept apart
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    fm = PositionOracle(frame=N * S, stride=S)([img, img])
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(300, 2, generator=g, dtype=torch.float64) * torch.tensor([w - 1, h - 1])
    pts = torch.cat([pts, pts.round()])
    m = transfer_points(fm[0], fm[1], pts, MatchConfig(content_only=False))
    expected = torch.tensor(
        [_ref_cell_centre(x, y, w, h) for x, y in pts.tolist()], dtype=torch.float64
    )
    inside = (expected[:, 0] <= w - 1) & (expected[:, 1] <= h - 1) & (expected >= 0).all(1)
    assert inside.float().mean() > 0.8
    assert torch.allclose(m.points_b.double()[inside], expected[inside], atol=1e-4)
    # a point at a returned cell centre maps to itself
    again = transfer_points(fm[0], fm[1], m.points_b[inside], MatchConfig(content_only=False))
    assert torch.allclose(again.points_b, m.points_b[inside], atol=1e-4)
    # soft-argmax over a symmetric neighbourhood stays on the same centre (interior points)
    soft = transfer_points(fm[0], fm[1], m.points_b[inside], MatchConfig(soft_argmax=True))
    cells = fm[1].geometry[0].to_cell(m.points_b[inside])
    interior = ((cells >= 5) & (cells < N - 5)).all(1) & fm[1].geometry[0].content_mask()[
        cells[:, 1], cells[:, 0]
    ]
    assert interior.any()
    assert torch.allclose(soft.points_b[interior], m.points_b[inside][interior], atol=1e-3)
