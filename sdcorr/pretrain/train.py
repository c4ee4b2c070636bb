"""The pretraining loop: student/teacher self-distillation with DINO + iBOT + KoLeo.

One iteration: teacher forward on the global crops (no masks, no grad) → targets (centering or
Sinkhorn-Knopp) → student forward on masked global and local crops → losses → backward →
per-sub-module gradient clipping → AdamW → EMA teacher update (backbone and heads).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint as ckpt
from .config import PretrainConfig, save_yaml, to_dict, validate
from .dist import (
    DistInfo,
    all_mean,
    full_state_dict,
    init_distributed,
    load_full_state_dict,
    reshard,
    shard_fsdp2,
    wrap_ddp,
)  # fmt: skip
from .heads import SSLModel
from .losses import Centering, dino_loss, ibot_loss, koleo_loss, sinkhorn_knopp
from .schedules import apply_schedules, build_schedules, param_groups

log = logging.getLogger("sdcorr.pretrain")


@dataclass
class State:
    """Everything that changes during a run (what a checkpoint holds)."""

    student: nn.Module
    teacher: SSLModel
    optimizer: torch.optim.Optimizer
    centers: nn.ModuleDict
    step: int = 0
    corrupt: set[str] = field(default_factory=set)

    @property
    def student_module(self) -> SSLModel:
        """The unwrapped student (DDP keeps it in ``.module``)."""
        return getattr(self.student, "module", self.student)


def build_state(cfg: PretrainConfig, device: torch.device, info: DistInfo) -> State:
    """Student, teacher (identical weights, no drop path, frozen), optimiser and centres."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.run.seed)  # same init on every rank
        student = SSLModel(cfg.model)
    teacher = SSLModel(cfg.model, drop_path=0.0)
    teacher.load_state_dict(student.state_dict())
    student.to(device).train()
    teacher.to(device).eval().requires_grad_(False)
    fsdp = info.distributed and cfg.run.parallel == "fsdp2"
    if fsdp:
        bf16 = device.type == "cuda" and cfg.run.precision == "bf16"
        shard_fsdp2(student, device, bf16)
        shard_fsdp2(teacher, device, bf16)
    elif info.distributed:
        student = wrap_ddp(student, device)
    base = getattr(student, "module", student)
    groups = param_groups(base, cfg.model.num_layers, cfg.optim.layer_decay,
                          cfg.optim.patch_embed_lr_mult)  # fmt: skip
    for g in groups:
        g.pop("names")
    optimizer = torch.optim.AdamW(groups, lr=0.0, betas=cfg.optim.betas, foreach=True)
    m = cfg.model
    ibot_k = m.ibot_prototypes if m.ibot_separate_head else m.head_prototypes
    centers = nn.ModuleDict({
        "dino": Centering(m.head_prototypes, cfg.loss.center_momentum),
        "ibot": Centering(ibot_k, cfg.loss.center_momentum),
    }).to(device)  # fmt: skip
    return State(student, teacher, optimizer, centers)


def _teacher_targets(state: State, cfg: PretrainConfig, out: tuple, temp: float, n_masked: int):
    cls_logits, patch_logits = out
    if cfg.loss.centering == "sinkhorn_knopp":
        k = cfg.loss.sk_iterations
        patch = sinkhorn_knopp(patch_logits, temp, k) if n_masked else patch_logits.float()
        return sinkhorn_knopp(cls_logits, temp, k), patch
    return state.centers["dino"](cls_logits, temp), state.centers["ibot"](patch_logits, temp)


def train_step(
    state: State, batch: dict[str, Any], cfg: PretrainConfig, values: dict[str, float],
    device: torch.device, info: DistInfo,
) -> dict[str, float]:  # fmt: skip
    """One optimisation step; returns this rank's loss values and diagnostics."""
    gc = batch["global_crops"].to(device, non_blocking=True)
    lc = batch["local_crops"].to(device, non_blocking=True)
    masks = batch["masks"].to(device, non_blocking=True)
    idx = batch["mask_indices"].to(device, non_blocking=True)
    weights = batch["mask_weights"].to(device, non_blocking=True)
    n_masked = torch.tensor(float(len(idx)), device=device)
    if info.distributed:
        torch.distributed.all_reduce(n_masked)
    n_masked = int(n_masked.item())
    bf16 = device.type == "cuda" and cfg.run.precision == "bf16"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
    temp, lc_ = values["teacher_temp"], cfg.loss
    with amp:
        t_out = state.teacher.teacher_forward(gc, idx)
        if cfg.run.parallel == "fsdp2" and info.distributed:
            reshard(state.teacher)
        t_cls, t_patch = _teacher_targets(state, cfg, t_out, temp, n_masked)
        s = state.student(gc, lc, masks, idx)
    local, glob = dino_loss(s["global_logits"], s["local_logits"], t_cls, lc_.student_temp)
    if n_masked:
        ibot = ibot_loss(s["patch_logits"], t_patch, weights, len(gc), lc_.student_temp)
    else:  # no masked token on any rank: no iBOT term, centre untouched (in graph for DDP)
        ibot = s["patch_logits"].float().sum() * 0.0
    koleo = sum(koleo_loss(c) for c in s["global_cls"].chunk(2))
    total = lc_.dino_weight * (local + glob) + lc_.ibot_weight * ibot + lc_.koleo_weight * koleo
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    norms = _clip(state.student_module, cfg.optim.clip_grad)
    state.optimizer.step()
    ema_update(state.student_module, state.teacher, values["momentum"])
    mean_t = t_cls.mean(0)
    entropy = -(mean_t * mean_t.clamp_min(1e-12).log()).sum()
    return {
        "loss": total.item(), "dino_local": local.item(), "dino_global": glob.item(),
        "ibot": ibot.item(), "koleo": koleo.item(), "teacher_entropy": entropy.item(),
        "n_masked": float(n_masked), **norms,
    }  # fmt: skip


def _clip(student: SSLModel, max_norm: float) -> dict[str, float]:
    """Clip backbone, DINO head and iBOT head separately (DINOv2); return the pre-clip norms."""
    out = {}
    for name in ("backbone", "dino_head", "ibot_head"):
        if hasattr(student, name):
            params = [p for p in getattr(student, name).parameters() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if max_norm > 0 else None
            if norm is not None:
                norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
                out[f"grad_norm_{name}"] = float(norm)
    return out


@torch.no_grad()
def ema_update(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """``teacher ← m·teacher + (1-m)·student`` over all parameters (backbone and heads)."""
    t = list(teacher.parameters())
    s = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(t, s, alpha=1 - momentum)


def _state_dict(state: State, info: DistInfo, fsdp: bool) -> dict[str, Any]:
    rng = ckpt.rng_state()
    if info.distributed:
        gathered: list[Any] = [None] * info.world_size
        torch.distributed.all_gather_object(gathered, rng)
        rng_all = gathered
    else:
        rng_all = [rng]
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions as Opts
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        optim = get_optimizer_state_dict(
            state.student, state.optimizer, options=Opts(full_state_dict=True, cpu_offload=True)
        )
    else:
        optim = state.optimizer.state_dict()
    return {
        "step": state.step,
        "student": full_state_dict(state.student_module, fsdp),
        "teacher": full_state_dict(state.teacher, fsdp),
        "optimizer": optim,
        "centers": {k: v.cpu() for k, v in state.centers.state_dict().items()},
        "rng": rng_all,
        "corrupt": sorted(state.corrupt),
    }


def _load_state(state: State, saved: dict[str, Any], info: DistInfo, fsdp: bool) -> None:
    load_full_state_dict(state.student_module, saved["student"], fsdp)
    load_full_state_dict(state.teacher, saved["teacher"], fsdp)
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions as Opts
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(state.student, state.optimizer, saved["optimizer"],
                                 options=Opts(full_state_dict=True))  # fmt: skip
    else:
        state.optimizer.load_state_dict(saved["optimizer"])
    state.centers.load_state_dict(saved["centers"])
    state.step, state.corrupt = int(saved["step"]), set(saved["corrupt"])
    rngs = saved["rng"]
    ckpt.set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])


def _resolve_device(cfg: PretrainConfig, info: DistInfo) -> torch.device:
    from ..device import resolve_device

    dev = resolve_device(cfg.run.device)
    if dev.type == "cuda" and info.distributed:
        return torch.device("cuda", info.local_rank)
    return dev


def _loader(cfg: PretrainConfig, data: Path, info: DistInfo, start: int, device: torch.device):
    from torch.utils.data import DataLoader

    from .data import PretrainBatches

    ds = PretrainBatches(data, cfg.data, cfg.model.patch_size, cfg.run.batch_size, cfg.run.seed,
                         info.rank, info.world_size, cfg.total_steps)  # fmt: skip
    return DataLoader(
        ds, batch_size=None, sampler=range(start, cfg.total_steps),
        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # never draws from the global RNG (bit-exact resume)
        persistent_workers=False,
    )  # fmt: skip


def _trim_log(path: Path, upto: int) -> None:
    """Drop log lines of steps ``>= upto`` (written after the checkpoint we resume from)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] < upto]
    path.write_text("".join(ln + "\n" for ln in keep))


def run_pretraining(
    cfg: PretrainConfig, data: str | Path, out: str | Path, *, resume: bool = False,
    quiet: bool = False, dump_rank_states: bool = False,
) -> Path:  # fmt: skip
    """Train (or resume) a run; return ``OUT/backbone`` (the exported teacher backbone).

    Writes ``OUT/config.yaml``, ``OUT/log.jsonl``, ``OUT/checkpoints/step_*.pt`` and
    ``OUT/backbone/``. Under torchrun each rank calls this; rank 0 writes the files.
    The global RNG and thread count of the calling process are restored afterwards.
    """
    validate(cfg)
    out, data = Path(out), Path(data)
    info = init_distributed(_resolve_device(cfg, DistInfo()).type)
    device = _resolve_device(cfg, info)
    devices = [device.index or 0] if device.type == "cuda" else []
    threads = torch.get_num_threads()
    if device.type == "cpu" and cfg.run.cpu_threads:
        torch.set_num_threads(cfg.run.cpu_threads)
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.run.seed + info.rank)  # drop path; data RNGs are per step
            return _run(cfg, data, out, info, device, resume, quiet, dump_rank_states)
    finally:
        torch.set_num_threads(threads)


def _run(
    cfg: PretrainConfig, data: Path, out: Path, info: DistInfo, device: torch.device,
    resume: bool, quiet: bool, dump: bool,
) -> Path:  # fmt: skip
    from tqdm.auto import tqdm

    fsdp = info.distributed and cfg.run.parallel == "fsdp2"
    state = build_state(cfg, device, info)
    if resume:
        _load_state(state, ckpt.load_latest(out), info, fsdp)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
        _trim_log(out / "log.jsonl", state.step)
    schedules = build_schedules(cfg, info.world_size)
    loader = _loader(cfg, data, info, state.step, device)
    bar = tqdm(total=cfg.total_steps, initial=state.step, disable=True if quiet or not info.main
               else None, desc="pretrain", unit="it")  # fmt: skip
    t0, last = time.perf_counter(), {}
    for done, batch in enumerate(loader, start=1):
        step = int(batch["step"])
        state.corrupt.update(batch["corrupt"])
        values = schedules.at(step)
        apply_schedules(state.optimizer, values)
        last = train_step(state, batch, cfg, values, device, info)
        state.step = step + 1
        logged = all_mean(last, info)
        _log(out, cfg, state, values, logged, info, done, time.perf_counter() - t0)
        bar.update(1)
        if state.step % cfg.run.checkpoint_every == 0 or state.step == cfg.total_steps:
            _checkpoint(out, cfg, state, info, fsdp)
    bar.close()
    if dump:
        _dump_rank_state(out, state, info, fsdp, last)
    return _export(out, cfg, state, info, fsdp)


def _log(out: Path, cfg: PretrainConfig, state: State, values: dict, losses: dict,
         info: DistInfo, done: int, elapsed: float) -> None:  # fmt: skip
    """Append one JSONL record (rank 0); ``done`` steps took ``elapsed`` s in this process."""
    if not info.main or (state.step % cfg.run.log_every and state.step != cfg.total_steps):
        return
    rate = done / elapsed if elapsed > 0 else float("nan")
    rec = {"step": state.step - 1, **losses, **values, "steps_per_s": rate,
           "images_per_s": rate * cfg.run.batch_size * info.world_size,
           "corrupt_files": len(state.corrupt)}  # fmt: skip
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def _checkpoint(out: Path, cfg: PretrainConfig, state: State, info: DistInfo, fsdp: bool) -> None:
    saved = _state_dict(state, info, fsdp)  # collective under DDP/FSDP2
    if info.main:
        saved["config"] = to_dict(cfg)
        ckpt.save_checkpoint(out, state.step, saved, cfg.run.keep_checkpoints)


def _export(out: Path, cfg: PretrainConfig, state: State, info: DistInfo, fsdp: bool) -> Path:
    backbone = state.teacher.backbone
    weights = full_state_dict(backbone, fsdp)
    if info.main:
        size = cfg.data.global_size
        path = ckpt.export_backbone(weights, backbone.config, out, size)
        log.info("teacher backbone written to %s", path)
    if info.distributed:
        torch.distributed.barrier()
    return out / "backbone"


def _dump_rank_state(out: Path, state: State, info: DistInfo, fsdp: bool, last: dict) -> None:
    """Debug/test hook: every rank writes its student, teacher and last local losses."""
    student = full_state_dict(state.student_module, fsdp)
    teacher = full_state_dict(state.teacher, fsdp)
    (out / "ranks").mkdir(parents=True, exist_ok=True)
    torch.save({"student": student, "teacher": teacher, "last": last},
               out / "ranks" / f"rank{info.rank}.pt")  # fmt: skip
