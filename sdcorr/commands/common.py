"""Outputs shared by the commands: staged under temporary names and renamed together at the
end (:class:`Outputs`), so a run leaves all of its outputs or none; distinct output names
(:func:`check_distinct`); per-stage timings (:func:`stage`). The options every command shares
are in :mod:`sdcorr.commands.options`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError
from ..io import check_writable

log = logging.getLogger("sdcorr")


def check_distinct(paths: dict[str, str | None]) -> None:
    """Raise :class:`OutputError` when two output options name the same file."""
    seen: dict[str, str] = {}
    for option, path in paths.items():
        if not path:
            continue
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            raise OutputError(f"{seen[key]} and {option} name the same file: {path}")
        seen[key] = option


# ---------------------------------------------------------------------------- outputs
class Outputs:
    """A run's output files, staged under temporary names and renamed together at the end.

    ``stage(target)`` returns a temporary path beside ``target`` to write to; leaving the
    ``with`` block normally renames every staged file to its target (with Ctrl-C held back for
    those few renames), and an error or Ctrl-C inside the block removes them all. A write that
    fails with ``OSError`` (disk full, folder gone) becomes a one-line :class:`OutputError`.
    """

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path]] = []

    def stage(self, target: str | Path) -> Path:
        target = check_writable(target)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part{target.suffix}")
        self.staged.append((tmp, target))
        return tmp

    def commit(self) -> None:
        with _sigint_held():
            for tmp, target in self.staged:
                os.replace(tmp, target)

    def discard(self) -> None:
        for tmp, _ in self.staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, kind, err, tb) -> None:
        if kind is None:
            try:
                self.commit()
                return
            except OSError as exc:
                self.discard()
                raise self._error(exc) from None
        self.discard()
        if isinstance(err, OSError):
            raise self._error(err) from None

    def _error(self, err: OSError) -> OutputError:
        """One line naming the output (not its temporary name) and the system's reason."""
        where = str(err.filename) if err.filename else ""
        for _, target in self.staged:
            if where and Path(where).name.startswith(f".{target.name}."):
                where = str(target)
        return OutputError(f"cannot write {where or 'an output'}: {err.strerror or err}")


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) for the block, where the platform allows it."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # pragma: no cover - Windows
        yield
        return
    mask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        mask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Log and record the wall time of one stage."""
    t0 = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t0
    log.info("%s: %.2f s", name, timings[name])
