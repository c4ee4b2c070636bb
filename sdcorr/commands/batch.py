"""``sdcorr match --pairs FILE --out-dir DIR``: many pairs, resumable, sharded under torchrun.

Everything is checked before any model loads: the options (two per-pair outputs with one file
name are refused), every line of the pairs file and its images (:mod:`.pairs_file`), the output
and cache folders (creatable; ``/proc`` or a read-only folder is one ``error:`` line), and an
earlier run in DIR: ``DIR/config.json`` records the pairs file (path and sha1) and every option
that changes a result or an output, and a run with other settings is refused with one line
naming them. The same settings resume (``--resume`` also insists that DIR holds a run): pairs
already recorded are skipped, a torn last record is dropped and its pair redone.

Each pair goes through the same steps as ``sdcorr match A B`` (:mod:`.pair_steps`), its files
written all or none, then its record appended and flushed to ``DIR/matches.jsonl`` (under
``torchrun``, ``matches.rank<r>.jsonl``). Ranks take whole groups of pairs that share image A,
so a template is extracted once per rank (:mod:`sdcorr.shards`); raw features come from the
pipeline's feature cache, in memory and, with ``--cache-dir``, on disk for later runs. At the
end rank 0 merges every record into ``matches.jsonl`` in pairs-file order, writes
``timing.json`` and prints the summary line.

A pair *fails* when its images cannot be read, or no longer fit its points or the frames, when
its turn comes (changed or removed after the check): it gets a record with ``"error"`` instead
of matches, a warning names its line, the run goes on, the summary counts it, the exit status is
3, and the next run of the same settings tries it again. An output that cannot be written stops
the run (``error:``, status 2); a rerun resumes it.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .. import shards
from ..config import to_dict
from ..device import rank_device
from ..distributed import DistInfo, barrier, close_distributed, gather_numbers, join_group
from ..errors import OutputError, SdcorrError
from ..image import Geometry, load_image
from ..io import output_dirs, write_json
from ..options import Resolved, check_fits
from ..outdir import CONFIG_FILE, check_previous, normalise_path
from ..records import rank_file, write_merged
from . import pair_steps, pairs_file
from .common import Outputs
from .options import load_pipeline, resolve_args
from .pair_steps import PairInputs, drawing, targets
from .pairs_file import PER_PAIR, PairJob, check_images, check_points, name_jobs, read_pairs

log = logging.getLogger("sdcorr")

STEM = "matches"  # matches.jsonl, matches.rank<r>.jsonl
FAILED_STATUS = 3
#: the counters of one rank, in the order they are gathered
COUNTS = ("done", "skipped", "failed", "files", "extracted", "mirrors_extracted", "disk_hits",
          "extract_s", "loop_s")  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """A checked ``--pairs`` run: what to compute, on which pairs, and where."""

    resolved: Resolved
    pairs: str
    jobs: list[PairJob]
    points: torch.Tensor | None
    outputs: dict[str, str | None]
    out_dir: Path
    config: dict[str, Any]


def run(args: argparse.Namespace) -> int:
    """Match every pair of ``args.pairs``; print each output and a summary line. Returns 0, or
    :data:`FAILED_STATUS` when a pair failed."""
    t0 = time.perf_counter()
    plan = validate(args)
    with output_dirs({"--out-dir": plan.out_dir, "--cache-dir": args.cache_dir}):
        info = join_group()
        try:
            return _run(args, plan, info, t0)
        finally:
            close_distributed()


def validate(args: argparse.Namespace) -> Plan:
    """Check every option, line, image and folder of a ``--pairs`` run (nothing is loaded or
    created)."""
    if args.image_a or args.image_b:
        raise OutputError("give either two images or --pairs, not both")
    if not args.out_dir:
        raise OutputError("--pairs needs --out-dir")
    if any(m not in (None, "auto") for m in (args.mask_a, args.mask_b)):
        raise OutputError("mask files apply to one pair; with --pairs only --mask-a/--mask-b auto")
    if args.json:
        raise OutputError("with --pairs every pair's JSON goes to --out-dir; drop --json")
    targets(args).check_suffixes()
    outputs = {opt: getattr(args, opt[2:]) for opt in PER_PAIR}
    files = pairs_file.per_pair_files(outputs)
    resolved = resolve_args(args)
    jobs = read_pairs(args.pairs)
    sizes = check_images(jobs, resolved.config, args.pairs)
    points = check_points(args.points, jobs, sizes, args.pairs) if args.points else None
    out_dir = Path(args.out_dir)
    config = run_config(args, resolved, points)
    if not check_previous(out_dir, config, "--out-dir") and args.resume:
        raise OutputError(f"--resume: {out_dir} holds no earlier run (no {CONFIG_FILE})")
    return Plan(resolved, args.pairs, name_jobs(jobs, files), points, outputs, out_dir, config)


def run_config(
    args: argparse.Namespace, resolved: Resolved, points: torch.Tensor | None
) -> dict[str, Any]:
    """What decides a run's records and files (``config.json``; a rerun must match it)."""
    per_pair = {opt[2:]: Path(v).name if (v := getattr(args, opt[2:])) else None
                for opt in PER_PAIR}  # fmt: skip
    dense = bool(args.out or args.flow)
    return {
        "pairs": {"file": normalise_path(args.pairs),
                  "sha1": hashlib.sha1(Path(args.pairs).read_bytes()).hexdigest()},
        "pipeline": to_dict(resolved.config),
        "dtype": str(resolved.dtype).removeprefix("torch."),
        "category": args.category,
        "masks": list(resolved.run.masks),
        "points": points.tolist() if points is not None else None,
        "grid_step": None if points is not None else args.grid_step,
        "outputs": per_pair,
        "dense_grid": args.dense_grid if dense else None,
        "gif": {"fps": args.fps, "max_side": args.max_side} if args.out else None,
    }  # fmt: skip


# ---------------------------------------------------------------------------- the run
def _run(args: argparse.Namespace, plan: Plan, info: DistInfo, t0: float) -> int:
    barrier(info)  # every rank checked DIR before rank 0 writes into it
    device = rank_device(plan.resolved.device, info.local_rank)
    pipe = load_pipeline(replace(plan.resolved, device=device), cache_dir=args.cache_dir)
    if info.main:
        write_json(plan.out_dir / CONFIG_FILE, plan.config)
    worker = _Worker(args, plan, pipe)
    todo, skipped = shards.pending(plan.jobs, plan.out_dir, STEM, info, lambda j: j.name,
                                   _source, _complete)  # fmt: skip
    desc = f"rank {info.rank}/{info.world_size}" if info.distributed else "sdcorr match --pairs"
    path = rank_file(plan.out_dir, STEM, info.rank, info.world_size)
    loop_s = shards.record_each(todo, worker, path, desc, args.quiet, worker.postfix)
    stats = pipe.cache.stats
    mine = {"done": worker.done, "skipped": skipped, "failed": worker.failed,
            "files": worker.files, "extracted": stats["extracted"],
            "mirrors_extracted": stats["mirrors_extracted"], "disk_hits": stats["disk_hits"],
            "extract_s": pipe.cache.seconds, "loop_s": loop_s}  # fmt: skip
    barrier(info)
    ranks = [_counts(v) for v in gather_numbers(info, [mine[k] for k in COUNTS])]
    if info.main:
        _merge(plan)
        _report(plan, ranks, time.perf_counter() - t0)
    return FAILED_STATUS if sum(r["failed"] for r in ranks) else 0


def _counts(values: list[float]) -> dict[str, float]:
    """One rank's gathered counters by name (counts as ints, seconds as floats)."""
    return {k: v if k.endswith("_s") else int(v) for k, v in zip(COUNTS, values, strict=True)}


def _source(job: PairJob) -> str:
    """The shard key: image A (pairs sharing it go to one rank, which extracts it once)."""
    return normalise_path(job.image_a)


def _complete(rec: dict[str, Any]) -> bool:
    return "pair" in rec and "points_b" in rec


class _Worker:
    """Matches one pair and returns its record (a failure record when its inputs went bad)."""

    def __init__(self, args: argparse.Namespace, plan: Plan, pipe: Any) -> None:
        self.plan, self.pipe, self.category = plan, pipe, args.category
        self.draw = drawing(args)
        self.dense = bool(args.out or args.flow)
        self.done = self.failed = self.files = 0

    def __call__(self, job: PairJob) -> dict[str, Any]:
        head = {"pair": job.name, "line": job.line}
        try:
            inputs = self._inputs(job)
            tg = pairs_file.targets(self.plan.outputs, self.plan.out_dir, job.name)
            with Outputs() as outputs:  # this pair's files: all or none
                result = pair_steps.match(pair_steps.build(self.pipe, inputs), inputs,
                                          self.draw, self.dense)  # fmt: skip
                written = pair_steps.write(result, inputs, tg, self.draw, self.pipe.config,
                                           outputs)  # fmt: skip
        except OutputError:
            raise
        except SdcorrError as err:
            log.warning("%s:%d: pair failed: %s", self.plan.pairs, job.line, err)
            self.failed += 1
            return {**head, "image_a": str(job.image_a), "image_b": str(job.image_b),
                    "error": str(err)}  # fmt: skip
        for kind, path in written:
            print(f"{kind}\t{path}")
        self.done += 1
        self.files += len(written)
        return {**head, **pair_steps.record(result.matches, inputs)}

    def _inputs(self, job: PairJob) -> PairInputs:
        """The pair's images and points, checked again (they may have changed since)."""
        img_a, img_b = load_image(job.image_a), load_image(job.image_b)
        for img, path in ((img_a, job.image_a), (img_b, job.image_b)):
            check_fits(self.pipe.config, img.size, str(path))
        points = self.plan.points
        if points is not None:
            Geometry(img_a.width, img_a.height, 1).check_inside(points, "--points")
        return PairInputs(str(job.image_a), str(job.image_b), img_a, img_b, points,
                          self.plan.resolved.run.masks, self.category)  # fmt: skip

    def postfix(self) -> dict[str, int]:
        """The progress bar's counters."""
        return {"extracted": self.pipe.cache.stats["extracted"], "failed": self.failed}


# ---------------------------------------------------------------------------- the end
def _merge(plan: Plan) -> None:
    """Rank 0: every rank's records into ``matches.jsonl``, in pairs-file order."""
    names = [job.name for job in plan.jobs]
    records, missing = shards.collect(plan.out_dir, STEM, names, _complete)
    if missing:  # a rank stopped early: keep the rank files, a rerun resumes
        raise OutputError(f"{len(missing)} pairs have no record (first: {missing[0]}) in "
                          f"{plan.out_dir}; rerun the same command to finish them")  # fmt: skip
    write_merged(plan.out_dir, STEM, records)


def _report(plan: Plan, ranks: list[dict[str, float]], wall: float) -> None:
    """Print the summary line; write ``timing.json`` (per rank and in all)."""
    total = {k: sum(r[k] for r in ranks) for k in COUNTS}
    n = total["done"]
    per_pair = total["loop_s"] / n if n else 0.0
    extracted = _extracted(total)
    where = f" on {len(ranks)} ranks" if len(ranks) > 1 else ""
    print(f"{len(plan.jobs)} pairs: {n} done, {total['skipped']} skipped, {total['failed']} "
          f"failed; {extracted}; {total['files']} files written to {plan.out_dir}; "
          f"{per_pair:.2f} s per pair{where}, {wall:.1f} s in all")  # fmt: skip
    images = total["extracted"] + total["mirrors_extracted"]
    write_json(plan.out_dir / "timing.json", {
        "world_size": len(ranks), "wall_s": round(wall, 3), "ranks": ranks, "total": total,
        "per_image_s": total["extract_s"] / images if images else None,
        "per_pair_s": (total["loop_s"] - total["extract_s"]) / n if n else None,
    })  # fmt: skip


def _extracted(stats: dict[str, Any]) -> str:
    """``"3 images extracted"``, or ``"3 images and 3 mirrors extracted"`` (flip alignment)."""
    mirrors = stats.get("mirrors_extracted", 0)
    also = f" and {mirrors} mirror{'s' * (mirrors != 1)}" if mirrors else ""
    return f"{stats['extracted']} image{'s' * (stats['extracted'] != 1)}{also} extracted"
