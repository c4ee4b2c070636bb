"""The torchrun process group: join it, know this process's rank, wait for the others, leave.

``torchrun`` starts one process per rank and sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``.
:func:`init_distributed` joins the group when ``WORLD_SIZE > 1`` and otherwise does nothing, so
every caller runs unchanged in a single process. Nothing here calls a collective unless a group
was joined. The evaluation runner (gloo, barriers only) and pretraining (NCCL on GPUs, gloo
elsewhere, with its DDP/FSDP wrappers in :mod:`sdcorr.pretrain.dist`) both use it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here (nothing to wait for in a single process)."""
    if info.distributed:
        dist.barrier()


def close_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
