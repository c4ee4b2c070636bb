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
    existed = path.is_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{option} {path}: cannot create the folder ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: the folder is not writable")
    return not existed


@contextlib.contextmanager
def output_dirs(*dirs: tuple[str | Path | None, str]) -> Iterator[None]:
    """Create each ``(folder, option)`` in turn (``None``: skipped), with
    :func:`make_output_dir`'s one-line errors; when a later one or the block fails, remove the
    folders (and parents) created here that are still empty, so a failed start leaves none.
    """
    created: list[tuple[Path, Path]] = []  # (folder, its topmost ancestor created here)
    try:
        for path, option in dirs:
            if path is None:
                continue
            path = Path(path)
            top = _first_missing(path)
            make_output_dir(path, option)
            if top is not None:
                created.append((path, top))
        yield
    except BaseException:
        for path, top in reversed(created):
            _remove_empty(path, top)
        raise


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` (itself or an ancestor) that does not exist yet."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def _remove_empty(path: Path, top: Path) -> None:
    """Remove ``path`` and its ancestors up to ``top`` while they are empty."""
    path = path.absolute()
    while True:
        try:
            path.rmdir()  # only an empty folder
        except OSError:
            return
        if path == top or path.parent == path:
            return
        path = path.parent


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
