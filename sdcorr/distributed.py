"""The torchrun process group: join it, know this process's rank, wait for the others, leave.

``torchrun`` starts one process per rank and sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``.
:func:`init_distributed` joins the group when ``WORLD_SIZE > 1`` and otherwise does nothing, so
every caller runs unchanged in a single process. Nothing here calls a collective unless a group
was joined. The sharded runs (:func:`join_group`: gloo, barriers and a gather of counters, for
the evaluation runner and ``sdcorr match --pairs``) and pretraining (NCCL on GPUs, gloo
elsewhere, with its DDP/FSDP wrappers in :mod:`sdcorr.pretrain.dist`) all use it.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

GROUP_TIMEOUT = datetime.timedelta(hours=24)  # ranks of a sharded run may finish far apart


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """True when a process group is in use."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0


def init_distributed(
    device_type: str = "cpu",
    backend: str | None = None,
    timeout: datetime.timedelta | None = None,
) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE > 1``; return this process's layout.

    Args:
        device_type: ``"cuda"`` picks NCCL (and this rank's GPU, ``cuda:LOCAL_RANK``) unless
            ``backend`` says otherwise; any other type picks gloo.
        backend: ``"gloo"`` or ``"nccl"``, overriding the choice above (the evaluation runner
            exchanges only barriers and always uses gloo).
        timeout: how long a collective may wait (``None``: torch's default).

    Returns:
        ``DistInfo()`` (rank 0 of 1) without torchrun; a group joined earlier is reused.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = backend or ("nccl" if device_type == "cuda" else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local)
        kwargs = {"timeout": timeout} if timeout is not None else {}
        dist.init_process_group(backend, **kwargs)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def join_group() -> DistInfo:
    """This process's rank layout for a sharded run; joins the torchrun group when there is one
    (gloo, even on GPUs: a sharded run exchanges only barriers and small counters)."""
    return init_distributed(backend="gloo", timeout=GROUP_TIMEOUT)


def gather_numbers(info: DistInfo, values: Sequence[float]) -> list[list[float]]:
    """Every rank's ``values`` (the same count on each rank), in rank order: one float64 tensor
    per rank through ``all_gather`` (no pickling); ``[values]`` in a single process."""
    if not info.distributed:
        return [list(values)]
    mine = torch.tensor(list(values), dtype=torch.float64)
    out = [torch.empty_like(mine) for _ in range(info.world_size)]
    dist.all_gather(out, mine)
    return [t.tolist() for t in out]


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here (nothing to wait for in a single process)."""
    if info.distributed:
        dist.barrier()


def close_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
