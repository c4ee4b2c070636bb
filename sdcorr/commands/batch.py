"""``sdcorr match --pairs FILE --out-dir DIR``: many pairs, every image extracted once.

The pairs file holds one ``A B`` pair per line (shell-style quoting for paths with spaces,
``#`` comments and blank lines ignored); relative paths are relative to the file's folder.
Every line is checked (two fields, both readable images, ``--points`` inside A) before any model
loads; a bad line is an error naming ``FILE:LINE``. Raw features come from the evaluation's
:class:`~sdcorr.eval.cache.FeatureCache`, so an image shared by several pairs is extracted once.

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
from typing import Any

import torch

from ..errors import OutputError, PointsError, SdcorrError
from ..image import Geometry, load_image


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


def _per_pair_outputs(args: argparse.Namespace, out_dir: Path, name: str) -> dict[str, str | None]:
    def one(opt: str | None) -> str | None:
        return str(out_dir / f"{name}-{Path(opt).name}") if opt else None

    return {
        "json": str(out_dir / f"{name}.json"),
        **{k: one(getattr(args, k, None)) for k in ("plot", "out", "flow", "pca")},
    }


def _validate(args: argparse.Namespace) -> tuple[list[PairJob], Path, torch.Tensor | None, Any]:
    if args.image_a or args.image_b:
        raise OutputError("give either two images or --pairs, not both")
    if not args.out_dir:
        raise OutputError("--pairs needs --out-dir")
    if args.mask_a or args.mask_b:
        raise OutputError("--mask-a/--mask-b apply to one pair; they cannot be used with --pairs")
    if args.json:
        raise OutputError("with --pairs every pair's JSON goes to --out-dir; drop --json")
    from .common import check_fits, resolve_config
    from .match import check_suffixes

    check_suffixes(args)

    config = resolve_config(args)
    jobs = read_pairs(args.pairs)
    for job in jobs:
        for img in (job.image_a, job.image_b):
            try:
                check_fits(config, load_image(img).size, str(img))
            except SdcorrError as err:
                raise PairsFileError(f"{args.pairs}:{job.line}: {err}") from None
    points = None
    if args.points:
        from .match import _read_points

        first = load_image(jobs[0].image_a)
        points = _read_points(args.points, Geometry(first.width, first.height, 1))
        for job in jobs:
            img = load_image(job.image_a)
            try:
                Geometry(img.width, img.height, 1).check_inside(points, f"points of {args.points}")
            except PointsError as err:
                raise PairsFileError(f"{args.pairs}:{job.line}: {err}") from None
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out-dir is not a folder: {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    return jobs, out_dir, points, config


def run(args: argparse.Namespace) -> int:
    """Match every pair of ``args.pairs``; print each output and a summary line."""
    from tqdm.auto import tqdm

    from ..eval.cache import FeatureCache
    from .common import Outputs, load_pipeline
    from .match import _STEPS

    jobs, out_dir, points, config = _validate(args)
    t0 = time.perf_counter()
    pipe = load_pipeline(args, config)
    cache = FeatureCache(lambda p, cat: pipe.extract([p], category=cat)[0], size=64)
    written = 0
    for job in tqdm(jobs, desc="sdcorr match --pairs", unit="pair", disable=args.quiet or None):
        fa, fb = pipe.fuse(
            cache.get(job.image_a, args.category), cache.get(job.image_b, args.category)
        )
        outs = _per_pair_outputs(args, out_dir, job.name)
        ns = argparse.Namespace(**{**vars(args), **outs, "image_a": str(job.image_a),
                                   "image_b": str(job.image_b)})  # fmt: skip
        st: dict[str, Any] = {
            "pipe": pipe, "fa": fa, "fb": fb, "points": points, "mask_a": None, "mask_b": None,
            "img_a": load_image(job.image_a), "img_b": load_image(job.image_b), "written": [],
        }  # fmt: skip
        with Outputs() as outputs:  # this pair's files: all or none
            st["outputs"] = outputs
            st = _STEPS["write"](ns, _STEPS["match"](ns, st))
        for kind, path in st["written"]:
            print(f"{kind}\t{path}")
        written += len(st["written"])
    print(
        f"{len(jobs)} pairs, {cache.stats['extracted']} images extracted, {written} files "
        f"written to {out_dir} in {time.perf_counter() - t0:.1f} s"
    )
    return 0
