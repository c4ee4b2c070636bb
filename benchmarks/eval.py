"""PCK evaluation of sdcorr (or of any method's saved predictions) on the standard benchmarks.

Examples:
    python benchmarks/eval.py --dataset spair --root data/SPair-71k --out runs/spair
    python benchmarks/eval.py --dataset pf-pascal --root data/PF-Pascal --out runs/pfpascal
    torchrun --nproc-per-node 4 benchmarks/eval.py --dataset tss --root data/TSS_CVPR2016 --out r
    python benchmarks/eval.py --dataset pf-willow --root data/PF-Willow --predictions p.jsonl --out o

See the README ("SPair-71k evaluation", "Other benchmarks", "Reproducing published numbers").
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

from sdcorr.cli import run_guarded
from sdcorr.distributed import close_distributed
from sdcorr.errors import ConfigError
from sdcorr.eval.common import Selection
from sdcorr.eval.datasets import DATASETS
from sdcorr.eval.outdir import check_out_dir, normalise_path
from sdcorr.eval.pairs import PROMPT_STYLES, default_prompt, with_prompt_names
from sdcorr.eval.pck import THRESHOLDS
from sdcorr.eval.protocol import Protocol, resolve_protocol
from sdcorr.eval.runner import ModelPredictor, counters, evaluate, join_group, load_predictions

log = logging.getLogger("sdcorr")
DTYPE_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def build_parser(dataset: str | None = None) -> argparse.ArgumentParser:
    """The benchmark's argument parser (``dataset`` fixes ``--dataset``, for ``spair.py``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    if dataset is None:
        p.add_argument("--dataset", required=True, choices=list(DATASETS), help="benchmark")
    else:
        p.set_defaults(dataset=dataset)
    p.add_argument("--root", required=True, help="the dataset folder (see the README)")
    p.add_argument("--out", required=True, help="output folder; rerunning with it resumes")
    p.add_argument("--split", default="test", help="pair split (default: test)")
    p.add_argument("--layout", default="large", choices=("large", "small"),
                   help="SPair pair list (default: large)")  # fmt: skip
    p.add_argument("--categories", nargs="+", metavar="CAT", help="only these categories")
    p.add_argument("--sample", type=int, metavar="N", help="N random pairs per category")
    p.add_argument("--sample-with-replacement", action="store_true",
                   help="draw --sample with replacement, as the reference's --SAMPLE")  # fmt: skip
    p.add_argument("--limit", type=int, metavar="N", help="only the first N selected pairs")
    p.add_argument("--seed", type=int, default=42, help="seed of --sample (default: 42)")
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
    m = p.add_argument_group("model")
    m.add_argument("--preset", default="sd-dino", help="pipeline preset (default: sd-dino)")
    m.add_argument("--dino-model", help="DINOv2 hub id or local folder")
    m.add_argument("--sd-model", help="Stable Diffusion hub id or local folder")
    m.add_argument("--sd-frame", type=int, help="SD frame side (default 960; multiple of 64)")
    m.add_argument("--sd-tile", type=int, help="SD tile side (default 512; 0: no tiles)")
    m.add_argument("--dino-frame", type=int, help="DINOv2 frame side (default 840)")
    m.add_argument("--prompt", choices=PROMPT_STYLES,
                   help='SD prompt: empty (default; cleandift: category-raw), "a photo of a '
                        '{natural name}" (category) or of the raw dataset name (category-raw)')  # fmt: skip
    m.add_argument("--no-category-prompt", dest="prompt", action="store_const", const="empty",
                   help=argparse.SUPPRESS)  # fmt: skip
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    m.add_argument("--dtype", default="fp32",
                   help="fp32 (default, as the reference), fp16 or bf16")  # fmt: skip
    m.add_argument("--cache-size", type=int, default=32, help="images kept in memory")
    m.add_argument("--cache-dir", help="folder for on-disk per-image feature cache")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info logs")
    return p


def check_options(args: argparse.Namespace) -> None:
    """Reject option values that cannot work, naming the option (before anything loads)."""
    args.prompt = args.prompt or default_prompt(args.preset)
    if args.sd_frame is not None and (args.sd_frame <= 0 or args.sd_frame % 64):
        raise ConfigError(f"--sd-frame must be a positive multiple of 64, got {args.sd_frame}")
    if args.sd_tile is not None and (args.sd_tile < 0 or args.sd_tile % 64):
        raise ConfigError(f"--sd-tile must be 0 (no tiles) or a multiple of 64, got {args.sd_tile}")
    if args.sd_tile and args.sd_frame and args.sd_tile > args.sd_frame:
        raise ConfigError(f"--sd-tile {args.sd_tile} is larger than --sd-frame {args.sd_frame}")
    if args.dino_frame is not None and args.dino_frame <= 0:
        raise ConfigError(f"--dino-frame must be positive, got {args.dino_frame}")
    if args.cache_size < 0:
        raise ConfigError(f"--cache-size must be at least 0, got {args.cache_size}")
    args.dtype = dtype_name(args.dtype)


def dtype_name(dtype: str) -> str:
    """``"half" → "fp16"``: the canonical name recorded in the result files."""
    import torch

    from sdcorr.device import resolve_dtype

    resolved = resolve_dtype(dtype, torch.device("cpu"))
    return DTYPE_NAMES.get(str(resolved).removeprefix("torch."), str(resolved))


def pipeline_config(args: argparse.Namespace) -> Any:
    """The preset with the model, frame and tile overrides of ``args`` applied.

    ``--sd-tile 0`` means no tiling (the whole frame at once), as in ``sdcorr match``.
    """
    from sdcorr.config import get_preset, with_models

    cfg = with_models(get_preset(args.preset), args.sd_model, args.dino_model)
    if cfg.sd is not None:
        sd = cfg.sd
        if args.sd_frame is not None:
            sd = dataclasses.replace(sd, frame=args.sd_frame)
        if args.sd_tile is not None:
            sd = dataclasses.replace(sd, tile_size=args.sd_tile or None)
        cfg = dataclasses.replace(cfg, sd=sd)
    if cfg.dino is not None and args.dino_frame is not None:
        cfg = dataclasses.replace(cfg, dino=dataclasses.replace(cfg.dino, frame=args.dino_frame))
    return cfg


def run_config(
    args: argparse.Namespace, protocol: Protocol, n_pairs: int, pipeline: Any
) -> dict[str, Any]:
    """The JSON-ready record of what was evaluated and how (config.json, summary.json)."""
    from sdcorr.config import to_dict

    return {
        "eval": protocol.config(args.root, n_pairs),
        "predictions": normalise_path(args.predictions) if args.predictions else None,
        "pipeline": to_dict(pipeline) if pipeline is not None else None,
        "prompt": None if pipeline is None else args.prompt,
        "dtype": None if pipeline is None else args.dtype,
    }


def model_predictor(args: argparse.Namespace, cfg: Any, local_rank: int) -> ModelPredictor:
    """Load the pipeline (on this rank's GPU under torchrun) behind a cached predictor."""
    import torch

    from sdcorr.config import to_dict
    from sdcorr.device import resolve_device, resolve_dtype
    from sdcorr.eval.cache import FeatureCache, config_hash
    from sdcorr.pipeline import SDDino

    device = resolve_device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    dtype = resolve_dtype(args.dtype, device)
    pipe = SDDino.from_pretrained(device=device, dtype=dtype, config=cfg)
    key = config_hash({"sd": to_dict(cfg.sd) if cfg.sd else None,
                       "dino": to_dict(cfg.dino) if cfg.dino else None,
                       "dtype": str(dtype)})  # fmt: skip
    predictor = ModelPredictor(pipe, use_category=args.prompt != "empty")
    predictor.cache = FeatureCache(
        predictor.extract_one, size=args.cache_size, disk=args.cache_dir, config_key=key,
        device=device,
    )  # fmt: skip
    return predictor


def protocol_of(args: argparse.Namespace) -> Protocol:
    """The dataset's protocol with the options' overrides and pair selection."""
    cats = tuple(args.categories) if args.categories else None
    sel = Selection(args.split, args.layout, cats, args.sample, args.limit, args.seed,
                    args.sample_with_replacement)  # fmt: skip
    return resolve_protocol(args.dataset, args.threshold, args.compare, args.alphas, sel)


def run(args: argparse.Namespace) -> int:
    """Evaluate as ``args`` say; return the exit status.

    Order: options, dataset (every file and row), predictions file, output folder (resume
    check): all before any model loads, so every user error costs seconds.
    """
    check_options(args)
    protocol = protocol_of(args)
    info = join_group()
    pairs = with_prompt_names(protocol.load_pairs(args.root), args.prompt)
    cfg = None if args.predictions else pipeline_config(args)
    config = run_config(args, protocol, len(pairs), cfg)
    preds = load_predictions(args.predictions, pairs) if args.predictions else None
    check_out_dir(args.out, config)
    stats = None
    if preds is not None:
        predict = preds
    else:  # TSS: dense flow; flip-aligned presets: GeoAware-SC's left/right renaming
        predict = protocol.predictor(model_predictor(args, cfg, info.local_rank))
        stats = lambda: counters(predict)  # noqa: E731
    evaluate(pairs, predict, args.out, config, protocol, args.quiet, stats)
    return 0


def main(argv: Sequence[str] | None = None, dataset: str | None = None) -> int:
    """Command-line entry point: 0 on success, 2 on a user error (one-line message)."""
    try:
        args = build_parser(dataset).parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        return run_guarded(run, args)
    finally:
        close_distributed()


if __name__ == "__main__":
    sys.exit(main())
