"""Output helpers: atomic writes (temp name, then rename) so a failure leaves nothing partial;
output folders created with a one-line error, and removed again by a run that fails before it
wrote into them (:func:`output_dirs`)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError


def check_writable(path: str | Path) -> Path:
    """Raise :class:`OutputError` unless ``path`` can be created in an existing, writable folder."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"output path is a folder: {path}")
    if not parent.is_dir():
        raise OutputError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder is not writable: {parent}")
    return path


def make_output_dir(path: str | Path, option: str) -> bool:
    """Create the output folder ``path`` (and its parents) if needed; return whether it was
    created here.

    Raises:
        OutputError: one line naming ``option`` and ``path`` when the folder cannot be created
            or written (read-only parent, ``/proc``, a file in the way).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: output path is not a folder")
    existed = path.is_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{option} {path}: cannot create the folder ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: the folder is not writable")
    return not existed


@contextlib.contextmanager
def output_dirs(dirs: dict[str, str | Path | None]) -> Iterator[None]:
    """Create each folder of ``{option: folder}`` (``None``: skipped) for the block; when the
    block (or creating a later folder) fails, remove the folders created here, parents included,
    that are still empty, so a failed start leaves nothing behind (:func:`make_output_dir` names
    the option whose folder cannot be created)."""
    created: list[tuple[Path, Path]] = []  # (folder, its topmost parent created here)
    try:
        for option, folder in dirs.items():
            if folder is None:
                continue
            path = Path(folder).absolute()
            top = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
            make_output_dir(path, option)
            if top is not None:
                created.append((path, top))
        yield
    except BaseException:
        for path, top in reversed(created):
            _remove_empty(path, top)
        raise


def _remove_empty(path: Path, top: Path) -> None:
    """``rmdir`` ``path`` and its parents up to ``top`` while they are empty."""
    for folder in [path, *path.parents]:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == top:
            return


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = check_writable(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)
