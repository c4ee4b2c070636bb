"""``sdcorr match --pairs FILE --out-dir DIR``: many pairs, every image extracted once.

The pairs file holds one ``A B`` pair per line (shell-style quoting for paths with spaces,
``#`` comments and blank lines ignored); relative paths are relative to the file's folder.
Every line is checked (two fields, both readable images, ``--points`` inside A) before any model
loads; a bad line is an error naming ``FILE:LINE``. Each pair goes through the same steps as a
single ``sdcorr match`` run (:mod:`sdcorr.commands.pair_steps`); raw features come from the
pipeline's feature cache (:mod:`sdcorr.cache`), so an image shared by several pairs is extracted
once, and so is each mirror that ``--flip-align`` needs. The summary line reports the cache's
counts. ``--mask-a/--mask-b auto`` apply to every pair (mask files only to a single pair).

Per pair, DIR receives ``<stemA>-<stemB>.json`` (as ``--json``) and, when the option is given,
``<stemA>-<stemB>-<name>`` for ``--plot``, ``--out``, ``--flow`` and ``--pca``, where ``<name>``
is that option's file name (``--flow flow.npz`` writes ``dog1-dog2-flow.npz``).
"""

from __future__ import annotations

import argparse
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import OutputError, PointsError, SdcorrError
from ..image import Geometry, load_image
from ..options import Resolved, check_fits
from . import pair_steps
from .common import Outputs
from .options import load_pipeline, resolve_args
from .pair_steps import PairInputs, Targets, drawing, read_points, targets


class PairsFileError(SdcorrError):
    """A line of a ``--pairs`` file is malformed or names an unreadable image."""


@dataclass(frozen=True)
class PairJob:
    """One line of a pairs file: the two images and the output name stem."""

    line: int
    image_a: Path
    image_b: Path
    name: str


def read_pairs(path: str | Path) -> list[PairJob]:
    """Parse and check a pairs file (images readable); raise :class:`PairsFileError` naming the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PairsFileError(f"pairs file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PairsFileError(f"cannot read pairs file {path}: {err}") from None
    jobs: list[PairJob] = []
    names: set[str] = set()
    for no, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{no}"
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as err:
            raise PairsFileError(f"{where}: {err}") from None
        if not fields:
            continue
        if len(fields) != 2:
            raise PairsFileError(
                f"{where}: expected two image paths 'A B', got {len(fields)} fields"
            )
        a, b = (path.parent / f for f in fields)
        for img in (a, b):
            try:
                load_image(img)
            except SdcorrError as err:
                raise PairsFileError(f"{where}: {err}") from None
        name = f"{a.stem}-{b.stem}"
        name = name if name not in names else f"{name}-line{no}"
        names.add(name)
        jobs.append(PairJob(no, a, b, name))
    if not jobs:
        raise PairsFileError(f"pairs file has no pairs: {path}")
    return jobs


def _per_pair_targets(args: argparse.Namespace, out_dir: Path, name: str) -> Targets:
    def one(opt: str | None) -> str | None:
        return str(out_dir / f"{name}-{Path(opt).name}") if opt else None

    return Targets(out=one(args.out), json=str(out_dir / f"{name}.json"), plot=one(args.plot),
                   flow=one(args.flow), pca=one(args.pca))  # fmt: skip


def _validate(
    args: argparse.Namespace,
) -> tuple[list[PairJob], Path, torch.Tensor | None, Resolved]:
    if args.image_a or args.image_b:
        raise OutputError("give either two images or --pairs, not both")
    if not args.out_dir:
        raise OutputError("--pairs needs --out-dir")
    if any(m not in (None, "auto") for m in (args.mask_a, args.mask_b)):
        raise OutputError("mask files apply to one pair; with --pairs only --mask-a/--mask-b auto")
    if args.json:
        raise OutputError("with --pairs every pair's JSON goes to --out-dir; drop --json")
    targets(args).check_suffixes()
    resolved = resolve_args(args)
    jobs = read_pairs(args.pairs)
    for job in jobs:
        for img in (job.image_a, job.image_b):
            try:
                check_fits(resolved.config, load_image(img).size, str(img))
            except SdcorrError as err:
                raise PairsFileError(f"{args.pairs}:{job.line}: {err}") from None
    points = _points(args, jobs) if args.points else None
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out-dir is not a folder: {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    return jobs, out_dir, points, resolved


def _points(args: argparse.Namespace, jobs: list[PairJob]) -> torch.Tensor:
    """``--points``, inside every pair's A (an error names the first line where they are not)."""
    first = load_image(jobs[0].image_a)
    points = read_points(args.points, Geometry(first.width, first.height, 1))
    for job in jobs:
        img = load_image(job.image_a)
        try:
            Geometry(img.width, img.height, 1).check_inside(points, f"points of {args.points}")
        except PointsError as err:
            raise PairsFileError(f"{args.pairs}:{job.line}: {err}") from None
    return points


def run(args: argparse.Namespace) -> int:
    """Match every pair of ``args.pairs``; print each output and a summary line."""
    from tqdm.auto import tqdm

    jobs, out_dir, points, resolved = _validate(args)
    t0 = time.perf_counter()
    pipe = load_pipeline(resolved)
    draw, written = drawing(args), 0
    for job in tqdm(jobs, desc="sdcorr match --pairs", unit="pair", disable=args.quiet or None):
        tg = _per_pair_targets(args, out_dir, job.name)
        inputs = PairInputs(str(job.image_a), str(job.image_b), load_image(job.image_a),
                            load_image(job.image_b), points, resolved.run.masks, args.category)  # fmt: skip
        with Outputs() as outputs:  # this pair's files: all or none
            result = pair_steps.match(pair_steps.build(pipe, inputs), inputs, draw,
                                      dense=bool(tg.out or tg.flow))  # fmt: skip
            done = pair_steps.write(result, inputs, tg, draw, pipe.config, outputs)
        for kind, path in done:
            print(f"{kind}\t{path}")
        written += len(done)
    print(f"{len(jobs)} pairs, {_extracted(pipe.cache.stats)}, {written} files written to "
          f"{out_dir} in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    return 0


def _extracted(stats: dict[str, int]) -> str:
    """``"3 images extracted"``, or ``"3 images and 3 mirrors extracted"`` (flip alignment)."""
    mirrors = stats.get("mirrors_extracted", 0)
    also = f" and {mirrors} mirror{'s' * (mirrors != 1)}" if mirrors else ""
    return f"{stats['extracted']} image{'s' * (stats['extracted'] != 1)}{also} extracted"
