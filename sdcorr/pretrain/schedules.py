"""Per-iteration schedules (DINOv2 ``CosineScheduler``) and AdamW parameter groups."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import PretrainConfig


def cosine_schedule(
    base: float, final: float, total: int, warmup: int = 0, start_warmup: float = 0.0,
    freeze: int = 0,
) -> np.ndarray:  # fmt: skip
    """``total`` values: ``freeze`` zeros, linear warm-up to ``base``, cosine to ``final``.

    Args:
        base: value at the end of the warm-up.
        final: value at the last iteration.
        total: number of iterations.
        warmup: warm-up iterations (from ``start_warmup``, reaching ``base`` at index ``warmup``).
        start_warmup: first warm-up value.
        freeze: leading iterations forced to 0 (last-layer freeze).

    Returns:
        ``(total,)`` float64 array.
    """
    warmup = min(warmup, total)
    ramp = np.linspace(start_warmup, base, warmup, endpoint=False)
    n = total - warmup
    i = np.arange(n)
    denom = max(n - 1, 1)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / denom))
    out = np.concatenate([ramp, cos])
    out[: min(freeze, total)] = 0.0
    return out


def teacher_temp_schedule(start: float, end: float, total: int, warmup: int) -> np.ndarray:
    """Linear ``start → end`` over ``warmup`` iterations, then constant ``end``."""
    warmup = min(warmup, total)
    return np.concatenate([np.linspace(start, end, warmup), np.full(total - warmup, end)])


@dataclass(frozen=True)
class Schedules:
    """Per-iteration arrays of a run, indexed by step."""

    lr: np.ndarray
    last_layer_lr: np.ndarray
    wd: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray

    def at(self, step: int) -> dict[str, float]:
        """All values at ``step`` (clipped to the last one)."""
        i = min(step, len(self.lr) - 1)
        return {
            "lr": float(self.lr[i]),
            "last_layer_lr": float(self.last_layer_lr[i]),
            "wd": float(self.wd[i]),
            "momentum": float(self.momentum[i]),
            "teacher_temp": float(self.teacher_temp[i]),
        }


def peak_lr(cfg: PretrainConfig, world_size: int = 1) -> float:
    """``base_lr · sqrt(total batch / lr_ref_batch)`` (DINOv2 ``sqrt_wrt_1024``)."""
    total_batch = cfg.run.batch_size * world_size
    return cfg.optim.base_lr * math.sqrt(total_batch / cfg.optim.lr_ref_batch)


def build_schedules(cfg: PretrainConfig, world_size: int = 1) -> Schedules:
    """The lr, last-layer lr, weight-decay, momentum and teacher-temperature schedules."""
    o, n = cfg.optim, cfg.total_steps
    lr = peak_lr(cfg, world_size)
    warm = cfg.epoch_steps(o.warmup_epochs)
    return Schedules(
        lr=cosine_schedule(lr, o.min_lr, n, warm),
        last_layer_lr=cosine_schedule(lr, o.min_lr, n, warm,
                                      freeze=cfg.epoch_steps(o.freeze_last_layer_epochs)),
        wd=cosine_schedule(o.weight_decay, o.weight_decay_end, n),
        momentum=cosine_schedule(o.momentum_teacher, o.momentum_teacher_end, n),
        teacher_temp=teacher_temp_schedule(
            cfg.loss.warmup_teacher_temp, cfg.loss.teacher_temp, n,
            cfg.epoch_steps(cfg.loss.warmup_teacher_temp_epochs),
        ),
    )  # fmt: skip


_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")
_NO_WD = re.compile(r"(\.bias$|norm|layernorm|layer_scale\d\.lambda1|gamma)")


def layer_id(name: str, num_layers: int) -> int:
    """DINOv2 layer id of a backbone parameter: embeddings 0, block i → i+1, the rest L+1."""
    if "embeddings." in name:
        return 0
    m = _LAYER.search(name)
    return int(m.group(1)) + 1 if m else num_layers + 1


def param_groups(
    model: nn.Module, num_layers: int, layer_decay: float, patch_embed_mult: float,
    backbone_mult: float = 1.0,
) -> list[dict]:  # fmt: skip
    """AdamW groups of a student (``backbone``, ``dino_head``, ``ibot_head``).

    Backbone params get ``lr_mult = backbone_mult * layer_decay ** (L + 1 - layer_id)`` (times
    ``patch_embed_mult`` for the patch embedding); heads get 1. Biases, norms and LayerScale
    get ``wd_mult = 0``. Params named ``last_layer`` follow the last-layer lr schedule. Groups
    are merged by ``(lr_mult, wd_mult, is_last_layer)``.
    """
    groups: dict[tuple[float, float, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr_mult = 1.0
        if name.startswith("backbone."):
            lr_mult = backbone_mult * layer_decay ** (num_layers + 1 - layer_id(name, num_layers))
            if "patch_embeddings" in name:
                lr_mult *= patch_embed_mult
        wd_mult = 0.0 if _NO_WD.search(name) else 1.0
        key = (lr_mult, wd_mult, "last_layer" in name)
        g = groups.setdefault(key, {"params": [], "names": [], "lr_mult": key[0],
                                    "wd_mult": key[1], "is_last_layer": key[2]})  # fmt: skip
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


def apply_schedules(optimizer: torch.optim.Optimizer, values: dict[str, float]) -> None:
    """Set every group's lr and weight decay for one iteration."""
    for g in optimizer.param_groups:
        lr = values["last_layer_lr"] if g["is_last_layer"] else values["lr"]
        g["lr"] = lr * g["lr_mult"]
        g["weight_decay"] = values["wd"] * g["wd_mult"]
