"""``sdcorr extract``: raw per-image feature maps (before the per-pair PCA) to safetensors."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from ..errors import OutputError
from .common import add_model_arguments, load_pipeline

HELP = "extract raw SD/DINOv2 feature maps of images into OUT/<name>.safetensors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", required=True, help="output folder (created)")
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from ..config import to_dict
    from ..image import load_image
    from ..io import atomic_path

    images = [load_image(p) for p in args.images]  # fail before loading models
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out must be a folder: {out}")
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(args)
    meta_cfg = json.dumps(to_dict(pipe.config))
    pairs = list(zip(args.images, images, strict=True))
    for path, img in tqdm(pairs, desc="extract", disable=args.quiet or None):
        feats = pipe.extract([img], args.category)[0]
        tensors = {k: m.features[0].cpu().contiguous() for k, m in feats.maps.items()}
        geos = {k: asdict(m.geometry[0]) for k, m in feats.maps.items()}
        meta = {"image": str(path), "geometry": json.dumps(geos), "config": meta_cfg}
        target = out / f"{Path(path).stem}.safetensors"
        with atomic_path(target) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        print(f"features\t{target}")
    return 0
