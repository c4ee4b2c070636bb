"""torch.distributed helpers for pretraining: DDP/FSDP2 wrapping, full state dicts, averaged
logs. Joining and leaving the torchrun group is the core's :mod:`sdcorr.distributed` (NCCL on
CUDA, gloo elsewhere), re-exported here. Nothing here calls a collective unless a process group
is initialised.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..distributed import DistInfo, close_distributed, init_distributed

__all__ = [
    "DistInfo",
    "all_mean",
    "close_distributed",
    "full_state_dict",
    "init_distributed",
    "load_full_state_dict",
    "reshard",
    "shard_fsdp2",
    "wrap_ddp",
]


def all_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar values over ranks (for logging)."""
    if not info.distributed or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return dict(zip(values, (t / info.world_size).tolist(), strict=True))


def wrap_ddp(student: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` (broadcasts rank 0's weights at construction)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(student, device_ids=ids, find_unused_parameters=False)


def shard_fsdp2(model: nn.Module, device: torch.device, bf16: bool) -> nn.Module:
    """FSDP2: ``fully_shard`` every transformer block, the backbone, each head and the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else None
    )
    kw = {"mesh": mesh, **({"mp_policy": mp} if mp else {})}
    for layer in model.backbone.encoder.layer:
        fully_shard(layer, **kw)
    fully_shard(model.backbone, **kw)
    for name in ("dino_head", "ibot_head"):
        if hasattr(model, name):
            fully_shard(getattr(model, name), **kw)
    fully_shard(model, **kw)
    return model


def reshard(model: nn.Module) -> None:
    """Reshard FSDP2 modules after a no-grad forward (the EMA needs sharded params)."""
    for m in model.modules():
        if hasattr(m, "reshard") and type(m).__name__.startswith("FSDP"):
            m.reshard()


def full_state_dict(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """A full CPU state dict (gathered on every rank under FSDP2; collective then)."""
    if not sharded:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts)


def load_full_state_dict(model: nn.Module, state: dict, sharded: bool) -> None:
    """Load a full state dict into a plain or FSDP2-sharded module (strict)."""
    if not sharded:
        model.load_state_dict(state, strict=True)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))
