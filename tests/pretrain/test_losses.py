"""Losses against hand-computed values; Sinkhorn-Knopp against the reference formula."""

from __future__ import annotations

import math

import pytest
import torch

from sdcorr.pretrain.losses import (
    Centering,
    dino_loss,
    ibot_loss,
    koleo_loss,
    sinkhorn_knopp,
)  # fmt: skip


def _lsm(row: list[float], temp: float) -> list[float]:
    z = [v / temp for v in row]
    lse = math.log(sum(math.exp(v) for v in z))
    return [v - lse for v in z]


def test_dino_loss_hand_computed() -> None:
    # B = 1, K = 2, one local crop: pairs = 2 global + 2 local = 4
    t = torch.tensor([[1.0, 0.0], [0.25, 0.75]])  # teacher targets of global crops 0 and 1
    sg = torch.tensor([[0.3, 0.1], [0.0, 0.2]])
    sl = torch.tensor([[0.5, -0.5]])
    local, glob = dino_loss(sg, sl, t, student_temp=0.1)
    lsm_g0, lsm_g1, lsm_l = _lsm([0.3, 0.1], 0.1), _lsm([0.0, 0.2], 0.1), _lsm([0.5, -0.5], 0.1)
    # cross-view: student global 0 learns teacher crop 1 and student global 1 teacher crop 0
    g = -(0.25 * lsm_g0[0] + 0.75 * lsm_g0[1]) - (1.0 * lsm_g1[0])
    loc = -(1.0 * lsm_l[0]) - (0.25 * lsm_l[0] + 0.75 * lsm_l[1])
    assert glob.item() == pytest.approx(g / 4, rel=1e-6)
    assert local.item() == pytest.approx(loc / 4, rel=1e-6)


def test_ibot_loss_hand_computed() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.2]])
    t = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([0.5, 0.5, 1.0])  # tokens 0,1 in one crop, token 2 alone in another
    got = ibot_loss(s, t, w, n_crops=4, student_temp=0.1)
    ce = [
        -(0.5 * _lsm([1, 0], 0.1)[0] + 0.5 * _lsm([1, 0], 0.1)[1]),
        -_lsm([0, 1], 0.1)[0],
        -_lsm([0.2, 0.2], 0.1)[1],
    ]
    assert got.item() == pytest.approx((0.5 * ce[0] + 0.5 * ce[1] + 1.0 * ce[2]) / 4, rel=1e-6)
    empty = ibot_loss(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0), 4)
    assert empty.item() == 0.0


def test_koleo_hand_computed() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.6, 0.8]])  # unit rows after normalising
    got = koleo_loss(x)
    d01, d02, d12 = math.sqrt(2), math.dist((1, 0), (0.6, 0.8)), math.dist((0, 1), (0.6, 0.8))
    nn = [min(d01, d02), min(d01, d12), min(d02, d12)]
    assert got.item() == pytest.approx(-sum(math.log(d + 1e-8) for d in nn) / 3, rel=1e-5)


def test_koleo_batch_one_and_half_precision() -> None:
    one = torch.randn(1, 8, requires_grad=True)
    loss = koleo_loss(one)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()  # still in the graph
    dup = torch.ones(4, 8, dtype=torch.float16)  # identical crops: distance 0
    half = koleo_loss(dup)
    assert half.dtype == torch.float32 and torch.isfinite(half)


def _sk_reference(logits: torch.Tensor, temp: float, iters: int = 3) -> torch.Tensor:
    """DINOv2's single-process ``sinkhorn_knopp_teacher``, verbatim maths in float64."""
    q = torch.exp(logits.double() / temp).t()
    b, k = q.shape[1], q.shape[0]
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def test_sinkhorn_matches_reference_and_marginals() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g)
    q = sinkhorn_knopp(logits, temp=0.5)
    assert torch.allclose(q.double(), _sk_reference(logits, 0.5), atol=1e-6)
    assert torch.allclose(q.sum(1), torch.ones(6), atol=1e-5)  # each sample: a distribution
    assert torch.allclose(q.sum(0), torch.full((5,), 6 / 5), atol=0.1)  # ~balanced after 3 iters


def test_sinkhorn_large_logits_do_not_overflow() -> None:
    logits = torch.tensor([[50.0, 0.0, -20.0], [10.0, 40.0, 0.0]])
    assert torch.isinf(torch.exp(logits / 0.04)).any()  # the naive version would overflow
    q = sinkhorn_knopp(logits, temp=0.04)
    assert torch.isfinite(q).all()
    assert torch.allclose(q.sum(1), torch.ones(2), atol=1e-5)
    half = sinkhorn_knopp(logits.half() * 100, temp=0.04)
    assert torch.isfinite(half).all() and half.dtype == torch.float32


def test_centering_lagged_update_hand_computed() -> None:
    c = Centering(2, momentum=0.9)
    a = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    out = c(a, temp=1.0)
    assert torch.allclose(out, torch.softmax(a, -1))  # step 0: centre still 0
    assert torch.equal(c.center, torch.zeros(1, 2))  # update is applied lazily
    b = torch.tensor([[0.0, 0.0]])
    out = c(b, temp=0.5)
    centre = 0.1 * torch.tensor([[2.0, 1.0]])  # 0.9 * 0 + 0.1 * mean(a)
    assert torch.allclose(c.center, centre)
    assert torch.allclose(out, torch.softmax((b - centre) / 0.5, -1))
    c(torch.zeros(0, 2), temp=1.0)  # empty batch: no NaN centre
    assert torch.isfinite(c.center).all()
