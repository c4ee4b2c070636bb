"""Training checkpoints (everything a bit-exact resume needs) and the backbone export."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, first_line
from ..io import atomic_path

log = logging.getLogger("sdcorr.pretrain")
CKPT_DIR = "checkpoints"


def checkpoint_path(out: Path, step: int) -> Path:
    """``OUT/checkpoints/step_XXXXXXX.pt`` of the state after ``step`` iterations."""
    return out / CKPT_DIR / f"step_{step:07d}.pt"


def list_checkpoints(out: Path) -> list[Path]:
    """Checkpoints of a run folder, oldest first."""
    return sorted((out / CKPT_DIR).glob("step_*.pt"))


def save_checkpoint(out: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` atomically and keep only the newest ``keep`` checkpoints."""
    path = checkpoint_path(out, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def remove_temporaries(out: Path) -> list[Path]:
    """Delete checkpoint files left half-written by a killed process; return them."""
    left = sorted((out / CKPT_DIR).glob(".step_*.tmp*"))
    for path in left:
        log.warning("removing the unfinished checkpoint %s", path)
        path.unlink(missing_ok=True)
    return left


REQUIRED_KEYS = ("step", "student", "teacher", "optimizer", "centers", "rng", "corrupt")


def load_latest(out: Path) -> dict[str, Any]:
    """The newest readable checkpoint of ``out``; unreadable (torn) newer ones are skipped
    with a warning.

    Nothing is unpickled with code execution allowed: a checkpoint is a ``torch.save`` zip of
    tensors and plain containers, read with ``torch.load(weights_only=True)`` after its pickle
    has been scanned for references to other Python objects.

    Raises:
        ConfigError: a checkpoint refers to Python objects other than tensors and plain
            containers (not written by sdcorr: refused, nothing of it runs), holds no sdcorr
            state, or no checkpoint is readable.
    """
    reasons = []
    for path in reversed(list_checkpoints(out)):
        try:
            state = _read_checkpoint(path)
        except OSError as err:  # truncated or foreign file: fall back to an older one
            reasons.append(f"{path.name}: {err}")
            continue
        for reason in reasons:
            log.warning("skipping unreadable checkpoint %s", reason)
        log.info("resuming from %s", path)
        return state
    why = f" ({reasons[0]})" if reasons else ""
    raise ConfigError(f"--resume: no readable checkpoint in {out / CKPT_DIR}{why}")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """Load one checkpoint safely; ``OSError`` when it is torn or not a checkpoint at all."""
    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        unsafe = get_unsafe_globals_in_checkpoint(path)
    except (RuntimeError, ValueError) as err:  # not a complete torch.save zip
        raise OSError(first_line(err)) from None
    if unsafe:
        raise ConfigError(
            f"--resume: refusing {path}: it refers to Python objects ({', '.join(unsafe[:3])}) "
            "that sdcorr never writes and that could run code when loaded; nothing of it was "
            "loaded: delete it (or the run folder) unless you know where it came from"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged zip member, a refused object
        raise OSError(first_line(err)) from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ConfigError(f"--resume: {path} is not an sdcorr checkpoint (no {', '.join(missing)})")
    return state


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states (CPU and, if present, CUDA)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _share(folder: Path) -> None:
    """Give ``folder`` (``mkdtemp`` makes it 0700) and its files the umask's usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)


def export_backbone(backbone_state: dict, config: Any, out: Path, image_size: int) -> Path:
    """Write ``OUT/backbone`` with ``save_pretrained`` (+ a DINOv2 image processor config).

    The weights are loaded strictly into a fresh ``Dinov2Model`` (``Dinov2WithRegistersModel``
    when the config has register tokens) first, so a key mismatch fails loudly. The folder is
    written under a temporary name and renamed; it gets the usual modes of the umask (0755
    folder, 0644 files with umask 022), readable by others.
    """
    from transformers import AutoModel

    try:  # the PIL backend needs no torchvision
        from transformers import BitImageProcessorPil as BitImageProcessor
    except ImportError:  # older transformers
        from transformers import BitImageProcessor

    model = AutoModel.from_config(config)
    model.load_state_dict(backbone_state, strict=True)
    final = out / "backbone"
    tmp = Path(tempfile.mkdtemp(prefix=".backbone.", dir=out))
    try:
        model.save_pretrained(tmp)
        BitImageProcessor(
            do_resize=True, size={"shortest_edge": round(image_size * 256 / 224)}, resample=3,
            do_center_crop=True,
            crop_size={"height": image_size, "width": image_size}, do_normalize=True,
            image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        ).save_pretrained(tmp)  # fmt: skip
        _share(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
