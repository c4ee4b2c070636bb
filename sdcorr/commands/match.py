"""``sdcorr match A B``: keypoint and dense correspondence, match plot and the swap GIF/PNG.

Everything the user gave is checked before any model loads: option values (argparse ``type``s
here, the shared model and match options by :func:`sdcorr.options.resolve`), then images
readable and big enough for one feature cell, points on A, masks the right size, outputs
writable and distinct. The pair is built once (fusion, masks, flip decision) and both the points
and the dense flow come from it (:mod:`sdcorr.commands.pair_steps`). All outputs are written
under temporary names and renamed together at the end (:class:`.common.Outputs`), so a run
leaves all of its outputs or none. ``--pairs FILE`` runs many pairs (:mod:`.batch`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from ..errors import OutputError
from ..image import Geometry, load_image
from ..io import check_writable, output_dirs
from ..options import Resolved, check_fits
from . import batch, pair_steps
from .common import Outputs, check_distinct, stage
from .options import (
    add_match_options,
    add_model_options,
    float_above,
    int_at_least,
    load_pipeline,
    resolve_args,
)
from .pair_steps import PairInputs, Targets, drawing, targets

log = logging.getLogger("sdcorr")

HELP = "match two images: keypoints (JSON, plot) and the dense swap animation (GIF/PNG)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the ``match`` options on ``p``."""
    p.add_argument(
        "image_a", nargs="?", help="source image A (its points are transferred; it lends colours)"
    )
    p.add_argument("image_b", nargs="?", help="target image B")
    p.add_argument("--out", default=None, help="swap animation (.gif) or swapped image (.png)")
    p.add_argument("--points", default=None, help="JSON list of [x, y] in A (default: a grid)")
    p.add_argument("--grid-step", type=int_at_least(1), default=4,
                   help="default points: every Nth feature cell")  # fmt: skip
    p.add_argument("--json", default=None, help="write matches + config used as JSON")
    p.add_argument("--plot", default=None, help="write a match plot (PNG)")
    p.add_argument(
        "--dense-grid",
        type=int_at_least(0),
        default=156,
        help="cells per side of the dense match (0: the native grid)",
    )
    p.add_argument("--fps", type=float_above(0), default=30.0, help="GIF frames per second")
    p.add_argument("--max-side", type=int_at_least(1), default=320,
                   help="longest side of a GIF panel in pixels")  # fmt: skip
    p.add_argument(
        "--flow", default=None, help="write the dense B->A flow (.npz: flow, valid, score)"
    )
    p.add_argument(
        "--pca", default=None, help="write A | B in joint PCA colours of the features (PNG)"
    )
    p.add_argument("--pairs", default=None, help="file of 'A B' lines (paths relative to it)")
    p.add_argument("--out-dir", default=None,
                   help="with --pairs: folder of matches.jsonl and each pair's files")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="with --pairs: continue the unfinished run in --out-dir (a rerun with "
                        "the same settings does so anyway; this also insists there is one)")  # fmt: skip
    p.add_argument("--cache-dir", default=None,
                   help="folder of an on-disk per-image feature cache, kept for later runs")  # fmt: skip
    add_match_options(p, mask_files=True)
    add_model_options(p)


@dataclass(frozen=True)
class Job:
    """A checked single-pair run: what to compute it with, on what, and where to write it."""

    resolved: Resolved
    inputs: PairInputs
    targets: Targets


def run(args: argparse.Namespace) -> int:
    """Match one pair (or, with ``--pairs``, every pair of a file); print each output."""
    from tqdm.auto import tqdm

    if args.pairs:  # many pairs
        return batch.run(args)
    if not (args.image_a and args.image_b) or args.out_dir:
        raise OutputError("give two images A B (or --pairs FILE --out-dir DIR)")
    if args.resume:
        raise OutputError("--resume continues a --pairs run; give --pairs FILE --out-dir DIR")
    job = validate(args)
    timings: dict[str, float] = {}
    draw, dense = drawing(args), bool(job.targets.out or job.targets.flow)
    with (
        output_dirs({"--cache-dir": args.cache_dir}),
        Outputs() as outputs,
        tqdm(total=4, desc="sdcorr match", disable=args.quiet or None) as bar,
    ):
        with stage("load models", timings):
            pipe = load_pipeline(job.resolved, cache_dir=args.cache_dir)
            bar.update()
        with stage("features", timings):
            pair = pair_steps.build(pipe, job.inputs)
            bar.update()
        with stage("match", timings):
            result = pair_steps.match(pair, job.inputs, draw, dense)
            bar.update()
        with stage("write", timings):
            written = pair_steps.write(result, job.inputs, job.targets, draw, pipe.config, outputs)
            bar.update()
    for kind, path in written:
        print(f"{kind}\t{path}")
    return 0


def validate(args: argparse.Namespace) -> Job:
    """Check every input and output of a single-pair run (no model is loaded)."""
    tg = targets(args)
    outs = {"--out": tg.out, "--json": tg.json, "--plot": tg.plot, "--flow": tg.flow,
            "--pca": tg.pca}  # fmt: skip
    if not any(outs.values()):
        raise OutputError("nothing to write: give --out, --json, --plot, --flow and/or --pca")
    tg.check_suffixes()
    check_distinct(outs)
    for path in outs.values():
        if path:
            check_writable(path)
    resolved = resolve_args(args)
    img_a, img_b = load_image(args.image_a), load_image(args.image_b)
    check_fits(resolved.config, img_a.size, f"image A ({args.image_a})")
    check_fits(resolved.config, img_b.size, f"image B ({args.image_b})")
    geo_a = Geometry(img_a.width, img_a.height, 1)
    points = pair_steps.read_points(args.points, geo_a) if args.points else None
    masks = (pair_steps.read_mask(args.mask_a, img_a.size),
             pair_steps.read_mask(args.mask_b, img_b.size))  # fmt: skip
    inputs = PairInputs(str(args.image_a), str(args.image_b), img_a, img_b, points, masks,
                        args.category)  # fmt: skip
    return Job(resolved, inputs, tg)
