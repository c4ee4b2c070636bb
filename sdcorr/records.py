"""Per-item result files: append-only JSONL, flushed per item, tolerant of a killed writer.

A run writes one JSON object per line and flushes after each, so a killed process loses at most
the item it was working on; a line cut off mid-write is dropped when the file is reopened.
Every record names its item under ``"pair"``. The files of a run share a stem (``pairs`` for the
evaluation, ``matches`` for ``sdcorr match --pairs``): under ``torchrun`` every rank appends to
its own ``<stem>.rank<r>.jsonl`` and rank 0 merges them into ``<stem>.jsonl`` at the end
(:mod:`sdcorr.shards` runs that loop). A record with an ``"error"`` field is an item that
failed: it is not complete (the item is redone by the next run) but it is kept for the merged
table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from .io import atomic_path

log = logging.getLogger("sdcorr")


def rank_file(out_dir: Path, stem: str, rank: int, world: int) -> Path:
    """The JSONL a rank appends to (``<stem>.jsonl`` in a single-process run)."""
    return out_dir / (f"{stem}.jsonl" if world == 1 else f"{stem}.rank{rank}.jsonl")


def result_files(out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.jsonl`` and every rank file present in ``out_dir``, in a fixed order."""
    merged = out_dir / f"{stem}.jsonl"
    files = [merged] if merged.is_file() else []
    return files + sorted(out_dir.glob(f"{stem}.rank*.jsonl"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file; a malformed line (a killed writer's last) is skipped."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping an unreadable line", path, i)
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def read_results(
    out_dir: Path, stem: str, complete: Callable[[dict[str, Any]], bool]
) -> dict[str, dict[str, Any]]:
    """All finished items in ``out_dir`` by name (the first complete record of a name wins).

    A record that is valid JSON but not ``complete`` (e.g. no ``pair``, ``category`` or hits for
    one of the run's α values) is dropped with a warning, exactly like a torn line, so the item
    is redone; a failure record (``"error"``) is dropped silently (see :func:`read_failures`).
    """
    records: dict[str, dict[str, Any]] = {}
    for path in result_files(out_dir, stem):
        for i, rec in enumerate(read_jsonl(path), 1):
            if "error" in rec:
                continue
            if not complete(rec):
                log.warning("%s: record %d is incomplete; its pair will be redone", path, i)
                continue
            records.setdefault(str(rec["pair"]), rec)
    return records


def read_failures(out_dir: Path, stem: str) -> dict[str, dict[str, Any]]:
    """The failure records (``"error"``) in ``out_dir`` by name (the last one of a name wins)."""
    return {
        str(rec["pair"]): rec
        for path in result_files(out_dir, stem)
        for rec in read_jsonl(path)
        if "error" in rec and "pair" in rec
    }


def _drop_torn_tail(path: Path) -> None:
    """Truncate ``path`` after its last newline (removes a half-written last line)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping an incomplete last line (%d bytes)", path, len(data) - cut)
        with open(path, "r+b") as f:
            f.truncate(cut)


class JsonlWriter:
    """Appends one JSON object per line and flushes after each (use as a context manager)."""

    def __init__(self, path: Path) -> None:
        """Open ``path`` for appending, first dropping a torn last line."""
        _drop_torn_tail(path)
        self.path = path
        self._f: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, obj: dict[str, Any]) -> None:
        """Append ``obj`` as one line and flush it to the OS."""
        self._f.write(json.dumps(obj) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_merged(out_dir: Path, stem: str, records: Iterable[dict[str, Any]]) -> Path:
    """Atomically rewrite ``<stem>.jsonl`` with ``records`` and remove the rank files."""
    path = out_dir / f"{stem}.jsonl"
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    for rank in sorted(out_dir.glob(f"{stem}.rank*.jsonl")):
        rank.unlink()
    return path
