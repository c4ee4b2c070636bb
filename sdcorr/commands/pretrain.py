"""``sdcorr pretrain``: DINOv2 pretraining of the backbone on a folder of images.

Under torchrun every rank runs the same command line:
``torchrun --nproc-per-node N -m sdcorr.cli pretrain ...``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "pretrain a DINOv2 backbone (DINO + iBOT + KoLeo) on a folder of images"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the ``pretrain`` options on ``p``."""
    from ..pretrain.config import PRESETS

    p.add_argument("--data", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="run folder (config, log, checkpoints, backbone)")
    p.add_argument("--preset", default="vitb14", help=f"one of: {', '.join(PRESETS)}")
    p.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help="YAML file overriding preset fields (same layout as OUT/config.yaml)",
    )
    p.add_argument("--steps", type=int, default=None, help="total iterations (overrides epochs)")
    p.add_argument("--batch-size", type=int, default=None, help="images per process and step")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=None, help="seed of init, data and masks")
    p.add_argument(
        "--parallel",
        choices=("ddp", "fsdp2"),
        default=None,
        help="multi-process strategy under torchrun (default ddp)",
    )
    p.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default=None,
        help="bf16 autocast on CUDA (loss maths in fp32) or fp32",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue OUT from its newest checkpoint with OUT/config.yaml",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a fresh run even if OUT already holds one (deletes its config, log, "
        "checkpoints and backbone)",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="MODEL",
        help="start both backbones from pretrained DINOv2 weights: hub id, alias "
        "(dinov2-small, ...) or local Dinov2Model folder; the heads start fresh",
    )
    p.add_argument("--dump-rank-states", action="store_true", help=argparse.SUPPRESS)


def resolve_config(args: argparse.Namespace):
    """The run's config: ``OUT/config.yaml`` on resume, else preset + ``--config`` + flags."""
    from dataclasses import replace

    from ..errors import ConfigError
    from ..pretrain.config import get_preset, load_yaml, merge

    out = Path(args.out)
    if args.resume:
        if not (out / "config.yaml").is_file():
            raise ConfigError(f"--resume: {out / 'config.yaml'} not found")
        cfg = load_yaml(out / "config.yaml", get_preset("vitb14"))
    else:
        cfg = get_preset(args.preset)
        if args.config:
            cfg = load_yaml(args.config, cfg)
    run = {k: v for k, v in {
        "steps": args.steps, "batch_size": args.batch_size, "device": args.device,
        "seed": args.seed, "parallel": args.parallel, "precision": args.precision,
    }.items() if v is not None}  # fmt: skip
    cfg = merge(cfg, {"run": run})
    if args.num_workers is not None:
        cfg = replace(cfg, data=replace(cfg.data, num_workers=args.num_workers))
    init = getattr(args, "init", None)
    if init and args.resume:
        raise ConfigError("--init starts a new run; --resume continues one (pass only one)")
    if init:
        from ..pretrain.init import apply_init

        cfg = apply_init(cfg, init)
    return cfg


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the pretraining; print the exported backbone folder."""
    from ..pretrain.train import run_pretraining

    cfg = resolve_config(args)
    if args.resume and args.overwrite:
        from ..errors import ConfigError

        raise ConfigError("--resume continues OUT and --overwrite deletes it (pass only one)")
    try:
        path = run_pretraining(cfg, args.data, args.out, resume=args.resume,
                               overwrite=args.overwrite, quiet=getattr(args, "quiet", False),
                               dump_rank_states=args.dump_rank_states)  # fmt: skip
    finally:  # under torchrun (``torchrun -m sdcorr.cli pretrain ...``): leave the group
        from ..distributed import close_distributed

        close_distributed()
    if os.environ.get("RANK", "0") == "0":
        print(path)
    return 0
