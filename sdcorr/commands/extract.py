"""``sdcorr extract``: raw per-image feature maps (before the per-pair PCA) to safetensors.

Each image gets ``OUT/<name>.safetensors``; ``<name>`` is the file's stem, or, when two inputs
share a stem (``a.jpg`` and ``dir/a.jpg``), its path below the inputs' common folder with ``/``
written as ``__`` (``a``, ``dir__a``). The metadata records the image path, the category, the SD
prompt, the geometry of every map and the resolved config. All files are written under temporary
names and renamed together at the end, so a run leaves all of its files or none.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

from ..errors import OutputError
from ..io import output_dirs
from ..options import check_fits
from .common import Outputs
from .options import add_model_options, load_pipeline, resolve_args

HELP = "extract raw SD/DINOv2 feature maps of images into OUT/<name>.safetensors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", required=True, help="output folder (created)")
    add_model_options(p)


def output_names(paths: list[str]) -> list[str]:
    """A distinct file name (no suffix) per image path; see the module docstring.

    Raises:
        OutputError: the same file is given twice.
    """
    resolved = [Path(p).resolve() for p in paths]
    seen: dict[Path, str] = {}
    for given, r in zip(paths, resolved, strict=True):
        if r in seen:
            raise OutputError(f"image given twice: {seen[r]} and {given}")
        seen[r] = given
    names = [r.stem for r in resolved]
    if len(set(names)) == len(names):
        return names
    root = Path(os.path.commonpath([r.parent for r in resolved]))
    rel = [r.relative_to(root) for r in resolved]
    names = [str(p.with_suffix("")).replace(os.sep, "__") for p in rel]
    if len(set(names)) < len(names):  # a.jpg and a.png: keep the extension
        names = [str(p).replace(os.sep, "__") for p in rel]
    return names


def run(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from ..config import to_dict
    from ..image import load_image

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out must be a folder: {out}")
    resolved = resolve_args(args)
    names = output_names(args.images)
    images = [load_image(p) for p in args.images]  # fail before loading models
    for path, img in zip(args.images, images, strict=True):
        check_fits(resolved.config, img.size, f"image {path}")
    with output_dirs({"--out": out}), Outputs() as outputs:  # a failed start leaves no folder
        pipe = load_pipeline(resolved, cache_size=0)  # each image once: nothing to keep
        meta_cfg = json.dumps(to_dict(pipe.config))
        prompt = pipe.sd.prompt_for(args.category) if pipe.sd is not None else None
        written = []
        todo = list(zip(args.images, images, names, strict=True))
        for path, img, name in tqdm(todo, desc="extract", disable=args.quiet or None):
            feats = pipe.extract([img], args.category)[0]
            tensors = {k: m.features[0].cpu().contiguous() for k, m in feats.maps.items()}
            geos = {k: asdict(m.geometry[0]) for k, m in feats.maps.items()}
            meta = {
                "image": str(path),
                "category": json.dumps(args.category),
                "prompt": json.dumps(prompt),
                "geometry": json.dumps(geos),
                "config": meta_cfg,
            }
            target = out / f"{name}.safetensors"
            save_file(tensors, str(outputs.stage(target)), metadata=meta)
            written.append(target)
    for target in written:
        print(f"features\t{target}")
    return 0
