"""Resumable work over a list of items, sharded across torchrun ranks, one JSONL record per item.

The evaluation runner (:mod:`sdcorr.eval.runner`) and batch matching (``sdcorr match --pairs``)
run the same loop:

* :func:`shard`: each rank takes groups of items that share a key (a source image, so its
  features are extracted once per rank; a group bigger than an equal share is cut into
  equal-share pieces), dealt greedily to the least-loaded rank, so the shards are
  deterministic, disjoint, covering and balanced;
* :func:`pending`: this rank's shard without the items the folder already records complete
  (a resumed run redoes only the rest; a torn last line is dropped, see :mod:`sdcorr.records`);
* :func:`record_each`: the work of each pending item, appended and flushed to this rank's
  JSONL as soon as it is done, with a progress bar;
* :func:`collect`: on rank 0, once every rank is done, the records in the items' order, ready
  for :func:`sdcorr.records.write_merged`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from .distributed import DistInfo
from .records import JsonlWriter, read_failures, read_results

T = TypeVar("T")
Record = dict[str, Any]
Complete = Callable[[Record], bool]


def group_by(items: Sequence[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """Items grouped by ``key(item)``, groups in order of first appearance."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


def shard(items: Sequence[T], rank: int, world: int, key: Callable[[T], Hashable]) -> list[T]:
    """This rank's items: ``key`` groups, dealt greedily to the least-loaded rank.

    A group larger than an equal share (``ceil(len(items) / world)``) is first cut into pieces
    of that size, so one template matched against a whole folder still spreads over every rank
    (its features then extracted once per rank); smaller groups stay whole. Deterministic,
    disjoint, and covering: the shards of ranks ``0..world-1`` partition ``items``, each
    within one equal share of the others, and each shard keeps the grouped order.
    """
    share = max(1, -(-len(items) // world))
    load = [0] * world
    mine: list[T] = []
    for group in group_by(items, key):
        for start in range(0, len(group), share):
            piece = group[start : start + share]
            r = min(range(world), key=lambda i: (load[i], i))
            load[r] += len(piece)
            if r == rank:
                mine.extend(piece)
    return mine


def pending(
    items: Sequence[T],
    out: Path,
    stem: str,
    info: DistInfo,
    name: Callable[[T], str],
    key: Callable[[T], Hashable],
    complete: Complete,
) -> tuple[list[T], int]:
    """``(todo, skipped)``: this rank's shard of ``items`` less those with a complete record in
    ``out`` (any rank's file, any earlier world size), and how many of the shard that left out."""
    done = read_results(out, stem, complete)
    mine = shard(items, info.rank, info.world_size, key)
    todo = [item for item in mine if name(item) not in done]
    return todo, len(mine) - len(todo)


def record_each(
    todo: Sequence[T],
    work: Callable[[T], Record],
    path: Path,
    desc: str = "pairs",
    quiet: bool = False,
    stats: Callable[[], dict[str, Any]] | None = None,
) -> float:
    """Append ``work(item)`` for each item to ``path`` (flushed per record) under a progress bar
    (``stats()`` as its postfix); return the seconds it took."""
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="pair", desc=desc, disable=quiet or None, smoothing=0.1)
    with JsonlWriter(path) as writer, bar:
        for item in todo:
            writer.write(work(item))
            bar.update(1)
            if stats is not None:
                bar.set_postfix(stats(), refresh=False)
    return time.perf_counter() - start


def collect(
    out: Path, stem: str, names: Sequence[str], complete: Complete
) -> tuple[list[Record], list[str]]:
    """``(records, missing)``: for each name in order, its complete record, else its last
    failure record; and the names that have neither."""
    found = read_results(out, stem, complete)
    failed = read_failures(out, stem)
    records, missing = [], []
    for n in names:
        rec = found.get(n) or failed.get(n)
        if rec is None:
            missing.append(n)
        else:
            records.append(rec)
    return records, missing
