"""Options and steps shared by the ``match`` and ``extract`` subcommands."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from ..config import PipelineConfig

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
    p.add_argument("--sd-frame", type=int, default=None, help="SD frame side (default 960; x64)")
    p.add_argument(
        "--sd-tile", type=int, default=None, help="SD tile side (default 512; 0: no tiles)"
    )
    p.add_argument(
        "--dino-frame", type=int, default=None, help="DINOv2 frame side (default 840; x14)"
    )
    p.add_argument(
        "--unet-weights",
        default=None,
        help="U-Net weights replacing the SD pipeline's: a file or hub repo:filename (CleanDIFT)",
    )
    p.add_argument(
        "--no-noise",
        action="store_true",
        help="feed clean latents to the U-Net (CleanDIFT; the timestep only conditions it)",
    )


def load_pipeline(args: argparse.Namespace):
    """Build :class:`~sdcorr.pipeline.SDDino` from the model arguments."""
    from ..config import get_preset
    from ..device import resolve_device, resolve_dtype
    from ..pipeline import SDDino

    cfg = override_config(get_preset(args.preset), args)
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


def override_config(cfg: PipelineConfig, args: argparse.Namespace) -> PipelineConfig:
    """Apply ``--seed``, ``--sd-frame``, ``--sd-tile`` and ``--dino-frame`` to a preset."""
    if cfg.sd is not None:
        sd = cfg.sd
        if args.seed is not None:
            sd = replace(sd, seed=args.seed)
        if args.sd_frame is not None:
            sd = replace(sd, frame=args.sd_frame)
        if args.sd_tile is not None:
            sd = replace(sd, tile_size=args.sd_tile or None)
        if getattr(args, "unet_weights", None):
            sd = replace(sd, unet_weights=args.unet_weights)
        if getattr(args, "no_noise", False):
            sd = replace(sd, noise=False)
        cfg = replace(cfg, sd=sd)
    if cfg.dino is not None and args.dino_frame is not None:
        cfg = replace(cfg, dino=replace(cfg.dino, frame=args.dino_frame))
    return cfg


@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Log and record the wall time of one stage."""
    t0 = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t0
    log.info("%s: %.2f s", name, timings[name])
