"""DINO CLS loss, iBOT masked-patch loss, KoLeo, and the teacher targets (centering or
Sinkhorn-Knopp). All maths runs in fp32; collective calls happen only when
``torch.distributed`` is initialised.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(x: torch.Tensor, op=None) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(x, op=op or dist.ReduceOp.SUM)
    return x


def _global_logsumexp(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    """``logsumexp`` over ``dim`` (``None``: all) and over ranks; stable for any magnitude."""
    if x.numel():
        m = x.amax() if dim is None else x.amax(dim=dim, keepdim=True)
    elif dim is None:  # this rank holds no rows (e.g. no masked patches), others may
        m = x.new_tensor(-math.inf)
    else:
        m = x.new_full((*x.shape[:dim], 1, *x.shape[dim + 1 :]), -math.inf)
    m = _all_reduce(m.detach().clone(), dist.ReduceOp.MAX if _distributed() else None)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(x - m)
    s = _all_reduce(e.sum() if dim is None else e.sum(dim=dim, keepdim=True))
    return m + torch.log(s)


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temp: float, n_iterations: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp teacher targets as in DINOv2, computed in the log domain (fp32).

    The reference exponentiates ``logits / temp`` directly and overflows once a logit exceeds
    ~3.5 at temperature 0.04; every normalisation here is a (cross-rank) ``logsumexp``, which
    is the same maths and can neither overflow nor divide by an underflowed zero.

    Args:
        logits: ``(B, K)`` teacher logits of this rank.
        temp: teacher temperature.
        n_iterations: alternating normalisations (3).

    Returns:
        ``(B, K)`` fp32 targets: each row sums to 1; over all ranks each prototype's column
        sums to about ``B_total / K`` (exactly so before the last row step).
    """
    q = logits.float().t() / temp  # (K, B) in log space
    k = q.shape[0]
    b_total = _all_reduce(torch.tensor(float(q.shape[1]), device=q.device))
    log_k, log_b = math.log(k), torch.log(b_total)
    q = q - _global_logsumexp(q, None)
    for _ in range(n_iterations):
        q = q - _global_logsumexp(q, 1) - log_k  # prototypes: mass 1/K each (over all ranks)
        q = q - torch.logsumexp(q, dim=0, keepdim=True) - log_b  # samples: mass 1/B each
    return torch.exp(q + log_b).t()


class Centering(nn.Module):
    """Teacher centring: ``softmax((t - c) / T)`` with ``c ← m·c + (1-m)·mean(t)``.

    As in DINOv2 the update with a batch is applied lazily at the next call, so step ``i`` uses
    a centre built from batches up to ``i-1``. The centre and the pending update are buffers
    (they go into checkpoints). An empty batch leaves the centre untouched.

    Args:
        dim: number of prototypes K.
        momentum: EMA momentum (0.9).
    """

    def __init__(self, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))
        self.register_buffer("pending", torch.zeros(1, dim))
        self.register_buffer("has_pending", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def forward(self, logits: torch.Tensor, temp: float) -> torch.Tensor:
        """``(R, K)`` teacher logits → ``(R, K)`` fp32 targets; queues the centre update."""
        if bool(self.has_pending):
            self.center.mul_(self.momentum).add_(self.pending, alpha=1 - self.momentum)
            self.has_pending.fill_(False)
        x = logits.float()
        out = F.softmax((x - self.center) / temp, dim=-1)
        total = _all_reduce(torch.tensor(float(len(x)), device=x.device))
        if total > 0:
            self.pending.copy_(_all_reduce(x.sum(0, keepdim=True)) / total)
            self.has_pending.fill_(True)
        return out


def cross_entropy(targets: torch.Tensor, student_logits: torch.Tensor, temp: float) -> torch.Tensor:
    """Per-row ``-Σ_k t·log_softmax(s / temp)`` in fp32: ``(R, K), (R, K)`` → ``(R,)``."""
    lsm = F.log_softmax(student_logits.float() / temp, dim=-1)
    return -(targets.float() * lsm).sum(-1)


def dino_loss(
    student_global: torch.Tensor,
    student_local: torch.Tensor,
    teacher_targets: torch.Tensor,
    student_temp: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DINO CLS loss over cross-view pairs, as in DINOv2 (mean over ``2 + 2·nL`` pairs).

    Args:
        student_global: ``(2B, K)`` student logits of the global crops, crop-major.
        student_local: ``(nL·B, K)`` student logits of the local crops, crop-major.
        teacher_targets: ``(2B, K)`` teacher targets of the global crops (not yet swapped).
        student_temp: student temperature (0.1).

    Returns:
        The local and the global terms, each already divided by the number of pairs.
    """
    t = teacher_targets.unflatten(0, (2, -1))  # (2, B, K)
    b = t.shape[1]
    n_local = len(student_local) // b
    n_pairs = 2 + 2 * n_local
    swapped = torch.cat([t[1], t[0]])  # crop-0 students learn from crop-1 targets and back
    global_term = cross_entropy(swapped, student_global, student_temp).sum() / b
    if n_local:
        lsm = F.log_softmax(student_local.float() / student_temp, dim=-1).unflatten(0, (n_local, b))
        local_term = -torch.einsum("tbk,sbk->", t.float(), lsm) / b
    else:
        local_term = student_global.sum() * 0.0
    return local_term / n_pairs, global_term / n_pairs


def ibot_loss(
    student_logits: torch.Tensor,
    teacher_targets: torch.Tensor,
    weights: torch.Tensor,
    n_crops: int,
    student_temp: float = 0.1,
) -> torch.Tensor:
    """iBOT masked-patch loss: per-crop mean over masked tokens, averaged over all crops.

    Args:
        student_logits: ``(M, K)`` logits of the masked student patch tokens.
        teacher_targets: ``(M, K)`` targets of the same positions in the unmasked teacher.
        weights: ``(M,)`` = 1 / (#masked tokens in the token's crop).
        n_crops: number of global crops ``2B`` (masked or not).

    Returns:
        Scalar ``Σ(ce·w) / n_crops`` (0, still in the graph, when ``M = 0``).
    """
    ce = cross_entropy(teacher_targets, student_logits, student_temp)
    return (ce * weights.float()).sum() / n_crops


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy regulariser ``-mean_i log(‖x_i - x_nn(i)‖ + eps)``.

    Computed in fp32 whatever the input dtype. With fewer than 2 rows there is no neighbour and
    the loss is 0 (kept in the graph).

    Args:
        x: ``(B, D)`` features (backbone CLS tokens of one global crop).

    Returns:
        Scalar loss.
    """
    x = x.float()
    if len(x) < 2:
        return x.sum() * 0.0
    x = F.normalize(x, p=2, dim=-1, eps=eps)
    with torch.no_grad():
        sim = x @ x.t()
        sim.fill_diagonal_(-2.0)
        nn_idx = sim.argmax(dim=1)
    dist_ = F.pairwise_distance(x, x[nn_idx], p=2, eps=eps)
    return -torch.log(dist_ + eps).mean()
