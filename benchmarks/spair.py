"""SPair-71k PCK evaluation of sdcorr (or of any method's saved predictions).

Examples:
    python benchmarks/spair.py --root data/SPair-71k --split test --preset sd-dino --out runs/a
    torchrun --nproc-per-node 4 benchmarks/spair.py --root data/SPair-71k --out runs/sd-dino
    python benchmarks/spair.py --root data/SPair-71k --predictions preds.jsonl --out runs/other

See the README ("SPair-71k evaluation") for the dataset layout, the PCK definitions and the output files.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

from sdcorr.cli import run_guarded
from sdcorr.errors import ConfigError
from sdcorr.eval.pck import DEFAULT_ALPHAS, THRESHOLDS
from sdcorr.eval.runner import (
    ModelPredictor,
    close_distributed,
    evaluate,
    init_distributed,
    load_predictions,
)
from sdcorr.eval.spair import CATEGORIES, SPLITS, load_spair

log = logging.getLogger("sdcorr")


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's argument parser."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="the SPair-71k folder (holds JPEGImages/ ...)")
    p.add_argument("--out", required=True, help="output folder; rerunning with it resumes")
    p.add_argument("--split", default="test", choices=SPLITS, help="pair split (default: test)")
    p.add_argument("--layout", default="large", choices=("large", "small"), help="pair list")
    p.add_argument("--categories", nargs="+", metavar="CAT", choices=CATEGORIES,
                   help="only these categories (default: all 18)")  # fmt: skip
    p.add_argument("--sample", type=int, metavar="N", help="N random pairs per category")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N selected pairs")
    p.add_argument("--seed", type=int, default=42, help="seed of --sample (default: 42)")
    p.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS),
                   help="PCK alphas (default: 0.1 0.05 0.01)")  # fmt: skip
    p.add_argument("--threshold", default="bbox", choices=THRESHOLDS,
                   help="alpha times max side of the target bbox (default) or image")  # fmt: skip
    p.add_argument("--predictions", metavar="FILE",
                   help="score a JSONL of {pair, pred_kps} instead of running a model")  # fmt: skip
    m = p.add_argument_group("model")
    m.add_argument("--preset", default="sd-dino", help="pipeline preset (default: sd-dino)")
    m.add_argument("--dino-model", help="DINOv2 hub id or local folder")
    m.add_argument("--sd-model", help="Stable Diffusion hub id or local folder")
    m.add_argument("--sd-frame", type=int, help="SD frame side (multiple of 64)")
    m.add_argument("--sd-tile", type=int, help="SD tile side (multiple of 64)")
    m.add_argument("--dino-frame", type=int, help="DINOv2 frame side (multiple of 14)")
    m.add_argument("--no-category-prompt", action="store_true",
                   help='empty SD prompt instead of "a photo of a {category}"')  # fmt: skip
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    m.add_argument("--dtype", help="fp32, fp16 or bf16 (default: fp16 on CUDA, else fp32)")
    m.add_argument("--cache-size", type=int, default=32, help="images kept in memory")
    m.add_argument("--cache-dir", help="folder for on-disk per-image feature cache")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info logs")
    return p


def pipeline_config(args: argparse.Namespace) -> Any:
    """The preset with the model and frame overrides of ``args`` applied."""
    from sdcorr.config import get_preset, with_models

    cfg = with_models(get_preset(args.preset), args.sd_model, args.dino_model)
    if cfg.sd is not None:
        sd = {"frame": args.sd_frame, "tile_size": args.sd_tile}
        cfg = dataclasses.replace(
            cfg, sd=dataclasses.replace(cfg.sd, **{k: v for k, v in sd.items() if v})
        )
    if cfg.dino is not None and args.dino_frame:
        cfg = dataclasses.replace(cfg, dino=dataclasses.replace(cfg.dino, frame=args.dino_frame))
    return cfg


def run_config(args: argparse.Namespace, n_pairs: int, pipeline: Any) -> dict[str, Any]:
    """The JSON-ready record of what was evaluated and how (written to summary.json)."""
    from sdcorr.config import to_dict

    return {
        "eval": {
            "dataset": "SPair-71k",
            "root": str(args.root),
            "split": args.split,
            "layout": args.layout,
            "categories": args.categories,
            "sample": args.sample,
            "limit": args.limit,
            "seed": args.seed,
            "n_pairs": n_pairs,
            "alphas": [float(a) for a in args.alphas],
            "threshold": args.threshold,
        },
        "predictions": str(args.predictions) if args.predictions else None,
        "pipeline": to_dict(pipeline) if pipeline is not None else None,
        "category_prompt": None if pipeline is None else not args.no_category_prompt,
        "dtype": args.dtype,
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
    predictor = ModelPredictor(pipe, use_category=not args.no_category_prompt)
    predictor.cache = FeatureCache(
        predictor.extract_one, size=args.cache_size, disk=args.cache_dir, config_key=key,
        device=device,
    )  # fmt: skip
    return predictor


def run(args: argparse.Namespace) -> int:
    """Evaluate as ``args`` say; return the exit status."""
    if not all(0 < a <= 1 for a in args.alphas):
        raise ConfigError(f"--alphas must lie in (0, 1], got {args.alphas}")
    _, _, local_rank = init_distributed()
    pairs = load_spair(args.root, args.split, args.categories, args.sample, args.limit,
                       args.seed, args.layout)  # fmt: skip
    stats = None
    if args.predictions:
        cfg, predict = None, load_predictions(args.predictions, pairs)
    else:
        cfg = pipeline_config(args)
        predict = model_predictor(args, cfg, local_rank)
        stats = lambda: dict(predict.cache.stats)  # noqa: E731
    evaluate(pairs, predict, args.out, run_config(args, len(pairs), cfg), args.alphas,
             args.threshold, args.quiet, stats)  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 on a user error (one-line message)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        return run_guarded(run, args)
    finally:
        close_distributed()


if __name__ == "__main__":
    sys.exit(main())
