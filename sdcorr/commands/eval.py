"""``sdcorr eval``: PCK of sdcorr (or of any method's saved predictions) on the benchmarks.

Examples:
    sdcorr eval --dataset spair --root data/SPair-71k --out runs/spair
    sdcorr eval --dataset pf-pascal --root data/PF-Pascal --out runs/pfpascal
    torchrun --nproc-per-node 4 benchmarks/eval.py --dataset tss --root data/TSS_CVPR2016 --out r
    sdcorr eval --dataset pf-willow --root data/PF-Willow --predictions p.jsonl --out o

``benchmarks/eval.py`` and ``benchmarks/spair.py`` (``--dataset spair`` fixed) launch
:func:`main` with the same options. The model and match options are ``sdcorr match``'s
(:mod:`sdcorr.commands.options`), resolved the same way; ``--seed`` is the pair sampling's seed
here and ``--sd-seed`` the SD noise's. Every check (options, dataset files and rows, the
predictions file, the output folder's earlier config) runs before any model loads and before
``--out`` is created. See the README ("SPair-71k evaluation", "Other benchmarks").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

from ..distributed import close_distributed
from ..errors import ConfigError
from ..eval.common import Selection
from ..eval.datasets import DATASETS
from ..eval.pairs import PROMPT_STYLES, default_prompt, with_prompt_names
from ..eval.pck import THRESHOLDS
from ..eval.protocol import Protocol, resolve_protocol
from ..eval.runner import ModelPredictor, counters, evaluate, join_group, load_predictions
from ..io import output_dirs
from ..options import Resolved
from ..outdir import check_out_dir, normalise_path
from .options import add_match_options, add_model_options, load_pipeline, resolve_args

HELP = "PCK evaluation on SPair-71k, PF-Pascal, PF-Willow, AP-10K or TSS (or of saved predictions)"
DTYPE_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def add_arguments(p: argparse.ArgumentParser, dataset: str | None = None) -> None:
    """Register the evaluation's options (``dataset`` fixes ``--dataset``, for ``spair.py``)."""
    if dataset is None:
        p.add_argument("--dataset", required=True, choices=list(DATASETS), help="benchmark")
    else:
        p.set_defaults(dataset=dataset)
    p.add_argument("--root", required=True, help="the dataset folder (see the README)")
    p.add_argument("--out", required=True, help="output folder; rerunning with it resumes")
    p.add_argument("--split", default="test", help="pair split")
    p.add_argument("--layout", default="large", choices=("large", "small"),
                   help="SPair pair list")  # fmt: skip
    p.add_argument("--categories", nargs="+", metavar="CAT", help="only these categories")
    p.add_argument("--sample", type=int, metavar="N", help="N random pairs per category")
    p.add_argument("--sample-with-replacement", action="store_true",
                   help="draw --sample with replacement, as the reference's --SAMPLE")  # fmt: skip
    p.add_argument("--limit", type=int, metavar="N", help="only the first N selected pairs")
    p.add_argument("--seed", type=int, default=42, help="seed of --sample")
    p.add_argument("--alphas", type=float, nargs="+",
                   help="PCK alphas (default: the dataset's, e.g. 0.1 0.05 0.01 on SPair)")  # fmt: skip
    p.add_argument("--threshold", choices=THRESHOLDS,
                   help="alpha times max side of the target bbox, image or keypoint extent "
                        "(default: the dataset's)")  # fmt: skip
    p.add_argument("--compare", choices=("lt", "le"),
                   help="correct if error < (lt) or <= (le, DIFT, TSS) alpha*L "
                        "(default: the dataset's)")  # fmt: skip
    p.add_argument("--predictions", metavar="FILE",
                   help="score a JSONL of {pair, pred_kps} instead of running a model")  # fmt: skip
    m = p.add_argument_group("model (as sdcorr match)")
    add_model_options(m, dtype_default="fp32", seed_flags=("--sd-seed",), category=False)
    add_match_options(m, masks=False)
    m.add_argument("--prompt", choices=PROMPT_STYLES,
                   help='SD prompt: empty (default; cleandift: category-raw), "a photo of a '
                        '{natural name}" (category) or of the raw dataset name (category-raw)')  # fmt: skip
    m.add_argument("--no-category-prompt", dest="prompt", action="store_const", const="empty",
                   help=argparse.SUPPRESS)  # fmt: skip
    m.add_argument("--cache-size", type=int, default=32, help="images kept in memory")
    m.add_argument("--cache-dir", help="folder for on-disk per-image feature cache")


def check_options(args: argparse.Namespace) -> tuple[Protocol, Resolved | None]:
    """Reject option values that cannot work, naming the option (before anything loads);
    resolve the dataset's protocol and the pipeline config (``None`` when scoring
    ``--predictions``)."""
    if args.cache_size < 0:
        raise ConfigError(f"--cache-size must be at least 0, got {args.cache_size}")
    args.prompt = args.prompt or default_prompt(args.preset)
    cats = tuple(args.categories) if args.categories else None
    sel = Selection(args.split, args.layout, cats, args.sample, args.limit, args.seed,
                    args.sample_with_replacement)  # fmt: skip
    protocol = resolve_protocol(args.dataset, args.threshold, args.compare, args.alphas, sel)
    resolved = resolve_args(args)
    args.dtype = DTYPE_NAMES.get(str(resolved.dtype).removeprefix("torch."), args.dtype)
    return protocol, None if args.predictions else resolved


def run_config(
    args: argparse.Namespace, protocol: Protocol, n_pairs: int, resolved: Resolved | None
) -> dict:
    """The JSON-ready record of what was evaluated and how (config.json, summary.json)."""
    from ..config import to_dict

    return {
        "eval": protocol.config(args.root, n_pairs),
        "predictions": normalise_path(args.predictions) if args.predictions else None,
        "pipeline": to_dict(resolved.config) if resolved is not None else None,
        "prompt": None if resolved is None else args.prompt,
        "dtype": None if resolved is None else args.dtype,
    }


def model_predictor(
    args: argparse.Namespace, resolved: Resolved, local_rank: int
) -> ModelPredictor:
    """Load the pipeline (on this rank's GPU under torchrun) behind a predictor; the pipeline's
    feature cache keeps ``--cache-size`` images in memory and ``--cache-dir`` on disk."""
    import torch

    device = resolved.device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    pipe = load_pipeline(replace(resolved, device=device), args.cache_size, args.cache_dir)
    return ModelPredictor(pipe, use_category=args.prompt != "empty")


def run(args: argparse.Namespace) -> int:
    """Evaluate as ``args`` say; return the exit status.

    Order: options, dataset (every file and row), predictions file, ``--cache-dir`` and
    ``--out`` (created, or the earlier run's settings compared), the models (every missing one
    named at once, :func:`sdcorr.loading.locate_models`): all before any model loads, so every
    user error costs seconds. A run that fails before it wrote anything removes the folders it
    created.
    """
    protocol, resolved = check_options(args)
    info = join_group()
    pairs = with_prompt_names(protocol.load_pairs(args.root), args.prompt)
    config = run_config(args, protocol, len(pairs), resolved)
    preds = load_predictions(args.predictions, pairs) if args.predictions else None
    cache_dir = args.cache_dir if resolved is not None else None
    with output_dirs({"--cache-dir": cache_dir, "--out": args.out}):
        check_out_dir(args.out, config)
        stats = None
        if preds is not None:
            predict = preds
        else:  # TSS: dense flow; flip-aligned presets: GeoAware-SC's left/right renaming
            predict = protocol.predictor(model_predictor(args, resolved, info.local_rank))
            stats = lambda: counters(predict)  # noqa: E731
        evaluate(pairs, predict, args.out, config, protocol, args.quiet, stats)
    return 0


def main(argv: Sequence[str] | None = None, dataset: str | None = None) -> int:
    """Entry point of the launchers (``benchmarks/eval.py``, ``benchmarks/spair.py``, one call
    per torchrun rank): 0 on success, 2 on a user error (one line), 130 on Ctrl-C."""
    from .. import cli

    parser = cli.Parser(prog=sys.argv[0], description=HELP, formatter_class=cli.HelpFormatter)
    cli.verbosity(parser, False)
    add_arguments(parser, dataset)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2)
        return int(exit_.code or 0)
    try:
        with cli.cli_logging(args.quiet, args.verbose), cli.third_party_bars(args.quiet):
            return cli.run_guarded(run, args)
    finally:
        close_distributed()
