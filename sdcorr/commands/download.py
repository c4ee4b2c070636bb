"""``sdcorr download``: fetch model weights into the Hugging Face cache."""

from __future__ import annotations

import argparse

HELP = "download the weights of a preset (or given models) into the Hugging Face cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..config import PRESETS

    p.add_argument("--preset", default="sd-dino", choices=list(PRESETS), help="whose models")
    p.add_argument("--model", action="append", default=[], metavar="ID",
                   help="a hub id or alias to fetch as well (repeatable); its kind is guessed "
                   "from the name (dinov2 → DINOv2, else Stable Diffusion)")  # fmt: skip
    p.add_argument("--no-preset", action="store_true", help="fetch only the --model ids")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")


def run(args: argparse.Namespace) -> int:
    from ..config import get_preset
    from ..features.unet_weights import resolve_weights
    from ..hub import canonical_id, download, resolve_model

    preset = None if args.no_preset else args.preset
    done = download(preset, revision=args.revision)
    sd = get_preset(preset).sd if preset else None
    if sd is not None and sd.unet_weights:  # e.g. cleandift: CleanDIFT's U-Net file as well
        done["unet_weights"] = resolve_weights(sd.unet_weights)
    for name in args.model:
        kind = "dino" if "dinov2" in canonical_id(name).lower() else "sd"
        done[f"{kind}:{name}"] = resolve_model(name, kind, args.revision)
    for kind, path in done.items():
        print(f"{kind}\t{path}")
    return 0
