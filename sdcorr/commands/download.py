"""``sdcorr download``: fetch model weights into the Hugging Face cache."""

from __future__ import annotations

import argparse

HELP = "download the weights of a preset (or given models) into the Hugging Face cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..config import PRESETS

    p.add_argument("--preset", default="sd-dino", choices=list(PRESETS), help="whose models")
    p.add_argument("--model", action="append", default=[], metavar="ID",
                   help="a hub id or alias to fetch as well (repeatable); its kind is guessed "
                   "from the name (dinov2/dinov3 → DINO, else Stable Diffusion)")  # fmt: skip
    p.add_argument("--unet-weights", default=None, metavar="REPO:FILE",
                   help="a U-Net weights file on the Hub to fetch as well (as match's "
                        "--unet-weights)")  # fmt: skip
    p.add_argument("--no-preset", action="store_true", help="fetch only the --model ids")
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")


def run(args: argparse.Namespace) -> int:
    from ..hub import canonical_id, download

    preset = None if args.no_preset else args.preset
    models = [("dino" if "dino" in canonical_id(m).lower() else "sd", m) for m in args.model]
    done = download(preset, models, args.unet_weights, args.revision)  # misses named at once
    for kind, path in done.items():
        print(f"{kind}\t{path}")
    return 0
