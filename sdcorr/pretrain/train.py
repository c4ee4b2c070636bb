"""The pretraining loop: student/teacher self-distillation with DINO + iBOT + KoLeo.

One iteration: teacher forward on the global crops (no masks, no grad) → targets (centering or
Sinkhorn-Knopp) → student forward on masked global and local crops → losses → backward →
per-sub-module gradient clipping → AdamW → EMA teacher update (backbone and heads).
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, SdcorrError, first_line
from . import checkpoint as ckpt
from . import rundir
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
from .stop import StopSignals

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
    warned_collapse: bool = False

    @property
    def student_module(self) -> SSLModel:
        """The unwrapped student (DDP keeps it in ``.module``)."""
        return getattr(self.student, "module", self.student)


def build_state(
    cfg: PretrainConfig, device: torch.device, info: DistInfo, load_init: bool = True
) -> State:
    """Student, teacher (identical weights, no drop path, frozen), optimiser and centres.

    With ``cfg.model.init`` (and ``load_init``) both backbones start from those pretrained
    weights; the heads are always freshly initialised.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.run.seed)  # same init on every rank
        student = SSLModel(cfg.model)
    if cfg.model.init and load_init:
        from .init import init_backbone

        init_backbone(student.backbone, cfg.model.init)
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
                          cfg.optim.patch_embed_lr_mult, cfg.optim.backbone_lr_mult)  # fmt: skip
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
    _check_finite(total, {"dino_local": local, "dino_global": glob, "ibot": ibot,
                          "koleo": koleo}, int(batch["step"]), info)  # fmt: skip
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    norms = _clip(state.student_module, cfg.optim.clip_grad)
    state.optimizer.step()
    ema_update(state.student_module, state.teacher, values["momentum"])
    return {
        "loss": total.item(), "dino_local": local.item(), "dino_global": glob.item(),
        "ibot": ibot.item(), "koleo": koleo.item(), **collapse_diagnostics(t_out[0], t_cls),
        "n_masked": float(n_masked), **norms,
    }  # fmt: skip


@torch.no_grad()
def collapse_diagnostics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Figures that tell a learning teacher from a collapsed one.

    Args:
        logits: ``(2B, K)`` teacher head outputs of the global crops, crop-major (row ``i`` and
            row ``i + B`` come from the same image).
        targets: ``(2B, K)`` teacher targets (softmax after centring, or Sinkhorn-Knopp).

    Returns:
        ``teacher_entropy_image``: mean over crops of each crop's target entropy (nats);
        ``teacher_entropy_max``: ``ln K``; ``teacher_cosine``: mean cosine between the teacher
        outputs (the targets the student is trained on) of different images (pairs of one
        image's two crops left out): 1 when every image gets the same target, whether uniform
        or peaked; ``teacher_logit_cosine``: the same on the raw head logits, which share a
        large common component even for real pretrained features under a fresh head (about
        0.87 for DINOv2-S before any update), so it is logged but not used as the limit;
        ``teacher_entropy_of_mean``: entropy of the batch-averaged target, which stays near
        ``ln K`` both for a healthy and for a uniformly collapsed teacher.
    """
    t = targets.float()
    per_image = -(t * t.clamp_min(1e-12).log()).sum(-1)
    mean_t = t.mean(0)
    of_mean = -(mean_t * mean_t.clamp_min(1e-12).log()).sum()
    return {
        "teacher_entropy_image": per_image.mean().item(),
        "teacher_entropy_max": math.log(t.shape[-1]),
        "teacher_cosine": _cross_image_cosine(t),
        "teacher_logit_cosine": _cross_image_cosine(logits.float()),
        "teacher_entropy_of_mean": of_mean.item(),
    }


def _cross_image_cosine(x: torch.Tensor) -> float:
    """Mean cosine between rows of ``x (2B, K)`` from different images (crop-major rows)."""
    z = F.normalize(x, dim=-1)
    n = len(z)
    img = torch.arange(n, device=z.device) % max(n // 2, 1)
    other = img[:, None] != img[None, :]
    return ((z @ z.t())[other].mean() if other.any() else z.new_tensor(float("nan"))).item()


def looks_collapsed(rec: dict[str, float], limit: float = 0.9) -> bool:
    """True when the teacher targets are near uniform or every image gets the same output."""
    return (
        rec["teacher_entropy_image"] > limit * rec["teacher_entropy_max"]
        or rec["teacher_cosine"] > limit
    )


class NonFiniteLossError(SdcorrError):
    """The loss became NaN or inf: training stopped before updating any weight."""


def _check_finite(total: torch.Tensor, parts: dict[str, torch.Tensor], step: int,
                  info: DistInfo) -> None:  # fmt: skip
    """Raise :class:`NonFiniteLossError` (on every rank) when ``total`` is not finite."""
    bad = torch.tensor(0.0 if torch.isfinite(total).item() else 1.0, device=total.device)
    if info.distributed:
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    if bad.item():
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in parts.items())
        raise NonFiniteLossError(
            f"non-finite loss ({total.item():.4g}; {terms}) at step {step}: training stopped "
            f"before the update; the checkpoints written so far are kept"
        )


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
    try:
        _restore(state, saved, info, fsdp)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
        raise ConfigError(
            f"--resume: the newest checkpoint does not fit the run's config.yaml "
            f"({first_line(err)})"
        ) from None


def _restore(state: State, saved: dict[str, Any], info: DistInfo, fsdp: bool) -> None:
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


def run_pretraining(
    cfg: PretrainConfig, data: str | Path, out: str | Path, *, resume: bool = False,
    overwrite: bool = False, quiet: bool = False, dump_rank_states: bool = False,
) -> Path:  # fmt: skip
    """Train (or resume) a run; return ``OUT/backbone`` (the exported teacher backbone).

    Writes ``OUT/config.yaml``, ``OUT/log.jsonl``, ``OUT/checkpoints/step_*.pt`` and
    ``OUT/backbone/``. Under torchrun each rank calls this; rank 0 writes the files.
    The global RNG and thread count of the calling process are restored afterwards.

    Raises:
        DatasetError: ``data`` holds no readable image (checked before anything is written).
        OutputError: ``out`` cannot be created or written.
        ConfigError: a fresh run into an ``out`` that holds a run (without ``overwrite``), or
            a checkpoint that cannot be resumed from.
        NonFiniteLossError: the loss became NaN/inf (the checkpoints so far are kept).
        KeyboardInterrupt: SIGINT or SIGTERM, after a checkpoint of the last finished step.
    """
    validate(cfg)
    out, data = Path(out), rundir.check_data(Path(data))
    info = init_distributed(_resolve_device(cfg, DistInfo()).type)
    created = rundir.prepare_out(out, resume, overwrite, info)
    device = _resolve_device(cfg, info)
    devices = [device.index or 0] if device.type == "cuda" else []
    threads = torch.get_num_threads()
    if device.type == "cpu" and cfg.run.cpu_threads:
        torch.set_num_threads(cfg.run.cpu_threads)
    try:
        with (
            rundir.undo_failed_start(out, resume, created, info),
            torch.random.fork_rng(devices=devices),
        ):
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
    saved = ckpt.load_latest(out) if resume else None  # before any model is built
    state = build_state(cfg, device, info, load_init=not resume)
    if saved is not None:
        _load_state(state, saved, info, fsdp)
    if info.main:
        ckpt.remove_temporaries(out)
        save_yaml(cfg, out / "config.yaml")
        rundir.trim_log(out / "log.jsonl", state.step)
    schedules = build_schedules(cfg, info.world_size)
    loader = _loader(cfg, data, info, state.step, device)
    bar = tqdm(total=cfg.total_steps, initial=state.step, disable=True if quiet or not info.main
               else None, desc="pretrain", unit="it")  # fmt: skip
    t0, last = time.perf_counter(), {}
    with StopSignals() as stop:
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
            signum = stop.agreed(info)
            if (signum or state.step % cfg.run.checkpoint_every == 0
                    or state.step == cfg.total_steps):  # fmt: skip
                _checkpoint(out, cfg, state, info, fsdp)
            if signum:
                bar.close()
                log.warning("stopped by signal %d after step %d; checkpoint %s written; continue "
                            "with --resume", signum, step, ckpt.checkpoint_path(out, state.step))  # fmt: skip
                raise KeyboardInterrupt
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
    _warn_collapse(cfg, state, rec)


def _warn_collapse(cfg: PretrainConfig, state: State, rec: dict) -> None:
    """Warn (once, and again at the last step) when the teacher looks collapsed after the
    teacher-temperature warm-up."""
    warm = cfg.epoch_steps(cfg.loss.warmup_teacher_temp_epochs)
    if "teacher_cosine" not in rec or rec["step"] < warm or not looks_collapsed(rec):
        return
    if state.warned_collapse and state.step != cfg.total_steps:
        return
    log.warning(
        "warning: the teacher looks collapsed at step %d (per-image entropy %.3f of max %.3f, "
        "cosine between images %.3f; healthy: <= 0.9 of max and <= 0.9)", rec["step"],
        rec["teacher_entropy_image"], rec["teacher_entropy_max"], rec["teacher_cosine"],
    )  # fmt: skip
    state.warned_collapse = True


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
