"""The pairs file of ``sdcorr match --pairs``: its lines, its images, and each pair's file names.

One ``A B`` pair per line (shell-style quoting for paths with spaces, ``#`` comments and blank
lines ignored); relative paths are relative to the file's folder. Every line is checked (two
fields; both images readable and big enough for one feature cell; ``--points`` inside A) before
any model loads, each distinct image decoded once however many lines name it; a bad line is an
error naming ``FILE:LINE``.

Per pair, the output folder receives ``<name>.json`` and ``<name>-<file>`` for each of
``--plot``, ``--out``, ``--flow`` and ``--pca`` given (``<file>`` = that option's file name),
where ``<name>`` is ``<stemA>-<stemB>``. Names never collide: two options with the same file name
are refused (as a single pair refuses them), and a pair whose files would land on another
pair's gets ``-line<N>`` (its line number) added, and a count after that if it still collides
(case-insensitively, so the names are distinct on every file system).
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import PipelineConfig
from ..errors import PointsError, SdcorrError
from ..image import Geometry, load_image
from ..options import check_fits
from .common import check_distinct
from .pair_steps import Targets, read_points

#: per-pair output options, in the order their files are listed
PER_PAIR = ("--out", "--plot", "--flow", "--pca")


class PairsFileError(SdcorrError):
    """A line of a ``--pairs`` file is malformed or names an unreadable image."""


@dataclass(frozen=True)
class PairJob:
    """One line of a pairs file: the two images and the pair's output name stem."""

    line: int
    image_a: Path
    image_b: Path
    name: str = ""


def read_pairs(path: str | Path) -> list[PairJob]:
    """Parse a pairs file (images are not opened); raise :class:`PairsFileError` naming the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PairsFileError(f"pairs file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PairsFileError(f"cannot read pairs file {path}: {err}") from None
    jobs: list[PairJob] = []
    for no, line in enumerate(text.splitlines(), start=1):
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as err:
            raise PairsFileError(f"{path}:{no}: {err}") from None
        if not fields:
            continue
        if len(fields) != 2:
            raise PairsFileError(
                f"{path}:{no}: expected two image paths 'A B', got {len(fields)} fields"
            )
        jobs.append(PairJob(no, path.parent / fields[0], path.parent / fields[1]))
    if not jobs:
        raise PairsFileError(f"pairs file has no pairs: {path}")
    return jobs


def check_images(
    jobs: Sequence[PairJob], config: PipelineConfig, pairs: str | Path
) -> dict[Path, tuple[int, int]]:
    """``{image: (w, h)}``: every image decoded once, readable and big enough for one feature
    cell of ``config``'s frames; an error names the first line with that image."""
    sizes: dict[Path, tuple[int, int]] = {}
    for job in jobs:
        for img in (job.image_a, job.image_b):
            if img in sizes:
                continue
            try:
                sizes[img] = load_image(img).size
                check_fits(config, sizes[img], str(img))
            except SdcorrError as err:
                raise PairsFileError(f"{pairs}:{job.line}: {err}") from None
    return sizes


def check_points(
    points: str, jobs: Sequence[PairJob], sizes: dict[Path, tuple[int, int]], pairs: str | Path
) -> torch.Tensor:
    """``(K, 2)`` points of the ``--points`` file, inside every pair's A (an error names the
    first line where they are not)."""
    first = sizes[jobs[0].image_a]
    pts = read_points(points, Geometry(first[0], first[1], 1))
    for job in jobs:
        w, h = sizes[job.image_a]
        try:
            Geometry(w, h, 1).check_inside(pts, f"points of {points}")
        except PointsError as err:
            raise PairsFileError(f"{pairs}:{job.line}: {err}") from None
    return pts


def per_pair_files(options: dict[str, str | None]) -> list[str]:
    """The file name each given per-pair option adds to a pair's name (``--plot v.png`` →
    ``v.png``); raise :class:`~sdcorr.errors.OutputError` when two of them are the same."""
    names = {opt: Path(value).name for opt, value in options.items() if value}
    check_distinct(names)
    return list(names.values())


def name_jobs(jobs: Sequence[PairJob], files: Sequence[str]) -> list[PairJob]:
    """Each job with a name ``<stemA>-<stemB>`` whose files (``<name>.json``, ``<name>-<f>``
    for ``f`` in ``files``) are taken by no earlier job (else ``-line<N>``, then ``-<k>``,
    added)."""
    used: set[str] = set()
    named = []
    for job in jobs:
        name = next(n for n in _candidates(job) if not used & _files(n, files))
        used |= _files(name, files)
        named.append(replace(job, name=name))
    return named


def _candidates(job: PairJob) -> Iterator[str]:
    base = f"{job.image_a.stem}-{job.image_b.stem}"
    yield base
    yield f"{base}-line{job.line}"
    for k in itertools.count(2):
        yield f"{base}-line{job.line}-{k}"


def _files(name: str, files: Sequence[str]) -> set[str]:
    """A pair's file names, case-folded (distinct on case-insensitive file systems too)."""
    return {f.casefold() for f in (f"{name}.json", *(f"{name}-{f}" for f in files))}


def targets(options: dict[str, str | None], out_dir: Path, name: str) -> Targets:
    """The output files of the pair ``name`` in ``out_dir``."""

    def one(opt: str) -> str | None:
        value = options.get(opt)
        return str(out_dir / f"{name}-{Path(value).name}") if value else None

    return Targets(out=one("--out"), json=str(out_dir / f"{name}.json"), plot=one("--plot"),
                   flow=one("--flow"), pca=one("--pca"))  # fmt: skip
