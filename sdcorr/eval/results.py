"""Per-pair result files: append-only JSONL, flushed per pair, tolerant of a killed writer.

A run writes one JSON object per line and flushes after each, so a killed process loses at most
the pair it was working on; a line cut off mid-write is dropped when the file is reopened.
Under ``torchrun`` every rank appends to its own ``pairs.rank<r>.jsonl`` and rank 0 merges them
into ``pairs.jsonl`` at the end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from ..io import atomic_path

log = logging.getLogger("sdcorr")

PAIRS_FILE = "pairs.jsonl"
RANK_GLOB = "pairs.rank*.jsonl"


def rank_file(out_dir: Path, rank: int, world: int) -> Path:
    """The JSONL a rank appends to (``pairs.jsonl`` in a single-process run)."""
    return out_dir / (PAIRS_FILE if world == 1 else f"pairs.rank{rank}.jsonl")


def result_files(out_dir: Path) -> list[Path]:
    """``pairs.jsonl`` and every rank file present in ``out_dir``, in a fixed order."""
    files = [out_dir / PAIRS_FILE] if (out_dir / PAIRS_FILE).is_file() else []
    return files + sorted(out_dir.glob(RANK_GLOB))


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
    out_dir: Path, complete: Callable[[dict[str, Any]], bool]
) -> dict[str, dict[str, Any]]:
    """All finished pairs in ``out_dir`` by pair name (the first complete record of a name wins).

    A record that is valid JSON but not ``complete`` (e.g. no ``pair``, ``category`` or hits for
    one of the run's α values) is dropped with a warning, exactly like a torn line, so the pair
    is redone.
    """
    records: dict[str, dict[str, Any]] = {}
    for path in result_files(out_dir):
        for i, rec in enumerate(read_jsonl(path), 1):
            if not complete(rec):
                log.warning("%s: record %d is incomplete; its pair will be redone", path, i)
                continue
            records.setdefault(str(rec["pair"]), rec)
    return records


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


def write_merged(out_dir: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Atomically rewrite ``pairs.jsonl`` with ``records`` and remove the rank files."""
    path = out_dir / PAIRS_FILE
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    for rank in sorted(out_dir.glob(RANK_GLOB)):
        rank.unlink()
    return path
