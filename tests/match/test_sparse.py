"""Sparse keypoint transfer with oracle features that encode a known transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdcorr.config import MatchConfig
from sdcorr.errors import PointsError
from sdcorr.match.sparse import nearest, transfer_points
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
