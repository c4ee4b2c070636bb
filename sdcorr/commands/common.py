"""Options and steps shared by the ``match`` and ``extract`` subcommands."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

log = logging.getLogger("sdcorr")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``--preset --category --dino-model --sd-model --device --dtype --seed --attention``."""
    from ..config import PRESETS

    p.add_argument("--preset", default="sd-dino", help=f"one of: {', '.join(PRESETS)}")
    p.add_argument(
        "--category", default=None, help='object category; SD prompt "a photo of a {category}"'
    )
    p.add_argument("--dino-model", default=None, help="DINOv2 hub id, alias or local folder")
    p.add_argument(
        "--sd-model", default=None, help="Stable Diffusion hub id, alias or local folder"
    )
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on CUDA, else fp32)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the fixed SD noise (default 42)")
    p.add_argument(
        "--attention", default="sdpa", choices=["sdpa", "xformers"], help="U-Net attention"
    )


def load_pipeline(args: argparse.Namespace):
    """Build :class:`~sdcorr.pipeline.SDDino` from the model arguments."""
    from ..config import get_preset
    from ..device import resolve_device, resolve_dtype
    from ..pipeline import SDDino

    cfg = get_preset(args.preset)
    if args.seed is not None and cfg.sd is not None:
        cfg = replace(cfg, sd=replace(cfg.sd, seed=args.seed))
    device = resolve_device(args.device)
    resolve_dtype(args.dtype, device)  # validate before loading anything
    return SDDino.from_pretrained(
        config=cfg,
        device=device,
        dtype=args.dtype,
        dino_model=args.dino_model,
        sd_model=args.sd_model,
        attention=args.attention,
        progress=log.info,
    )


@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Log and record the wall time of one stage."""
    t0 = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t0
    log.info("%s: %.2f s", name, timings[name])
