"""The run folder ``OUT``: checked before a run starts, never left half-made by a failed start.

A fresh run checks its data and its ``OUT`` before anything is written or any model is built,
refuses an ``OUT`` that already holds a run (unless ``--overwrite``), and, when it fails before
its first checkpoint, removes what it wrote (``config.yaml``, ``log.jsonl``, a folder it
created), so the next start is not refused for the remains of a start that never ran.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import ConfigError, DatasetError
from ..io import atomic_path, make_output_dir
from . import checkpoint as ckpt
from .data import list_images, load_rgb
from .dist import DistInfo

log = logging.getLogger("sdcorr.pretrain")

RUN_FILES = ("config.yaml", "log.jsonl", ckpt.CKPT_DIR, "backbone")


def check_data(root: Path) -> Path:
    """Raise :class:`DatasetError` unless ``root`` holds at least one readable image (the
    files are tried in order until one decodes)."""
    files = list_images(root)
    for path in files:
        with contextlib.suppress(OSError, ValueError, SyntaxError):
            load_rgb(path)
            return root
    raise DatasetError(f"--data {root}: none of its {len(files)} image files can be read")


def prepare_out(out: Path, resume: bool, overwrite: bool, info: DistInfo) -> bool:
    """Create ``out`` if needed and refuse to start a fresh run over an existing one (unless
    ``overwrite``, which deletes it). Returns whether ``out`` was created here.

    Raises:
        OutputError: ``out`` cannot be created or written (read-only folder, ``/proc``, a file).
        ConfigError: ``out`` already holds a run and neither ``resume`` nor ``overwrite``.
    """
    created = make_output_dir(out, "--out")
    found = [] if resume else [n for n in RUN_FILES if (out / n).exists()]
    if found and not overwrite:
        raise ConfigError(
            f"{out} already holds a run ({', '.join(found)}); pass --resume to continue it or "
            f"--overwrite to start again"
        )
    if found and info.main:
        for name in found:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    if info.distributed:
        torch.distributed.barrier()
    return created


@contextlib.contextmanager
def undo_failed_start(out: Path, resume: bool, created: bool, info: DistInfo) -> Iterator[None]:
    """On an error before the first checkpoint of a fresh run, remove what the run wrote."""
    try:
        yield
    except BaseException:
        if not resume and info.main and not ckpt.list_checkpoints(out):
            for name in RUN_FILES:
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                elif target.exists():
                    target.unlink()
            if created:
                with contextlib.suppress(OSError):
                    out.rmdir()  # only when empty
        raise


def trim_log(path: Path, upto: int) -> None:
    """Drop log lines of steps ``>= upto`` (written after the checkpoint we resume from) and
    lines that do not parse (a line torn by a kill); rewrite the file atomically."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            log.warning("dropping a torn line of %s", path)
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] < upto:
            keep.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(ln + "\n" for ln in keep))
