"""``sdcorr match A B``: keypoint and dense correspondence, match plot and the swap GIF/PNG.

Everything the user gave is checked before any model loads: option values by their argparse
``type`` (one entry per option in :func:`add_arguments`), then images readable and big enough for
one feature cell, points on A, masks the right size, outputs writable and distinct. All outputs
are written under temporary names and renamed together at the end (:class:`.common.Outputs`), so a
run leaves all of its outputs or none.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ImageLoadError, OutputError, PointsError
from ..image import Geometry, load_image
from ..io import check_writable
from .common import (
    Outputs,
    add_model_arguments,
    check_distinct,
    check_fits,
    float_above,
    int_at_least,
    load_pipeline,
    resolve_config,
    stage,
)

log = logging.getLogger("sdcorr")

HELP = "match two images: keypoints (JSON, plot) and the dense swap animation (GIF/PNG)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "image_a", nargs="?", help="source image A (its points are transferred; it lends colours)"
    )
    p.add_argument("image_b", nargs="?", help="target image B")
    p.add_argument("--out", default=None, help="swap animation (.gif) or swapped image (.png)")
    p.add_argument("--points", default=None, help="JSON list of [x, y] in A (default: a grid)")
    p.add_argument("--grid-step", type=int_at_least(1), default=4,
                   help="default points: every Nth feature cell")  # fmt: skip
    p.add_argument("--json", default=None, help="write matches + config used as JSON")
    p.add_argument("--plot", default=None, help="write a match plot (PNG)")
    p.add_argument(
        "--mask-a", default=None, help="PNG mask of A (nonzero = object), or auto (from features)"
    )
    p.add_argument(
        "--mask-b", default=None, help="PNG mask of B (restricts swap and matches), or auto"
    )
    p.add_argument(
        "--flip-align",
        action="store_true",
        help="also match from A's mirror, keep the closer (GeoAware-SC pose alignment)",
    )
    p.add_argument("--mutual", action="store_true", help="flag mutual nearest neighbours")
    p.add_argument("--soft-argmax", action="store_true", help="sub-cell refinement (GeoAware)")
    p.add_argument(
        "--dense-grid",
        type=int_at_least(0),
        default=156,
        help="cells per side of the dense match (0: the native grid)",
    )
    p.add_argument("--fps", type=float_above(0), default=30.0, help="GIF frames per second")
    p.add_argument("--max-side", type=int_at_least(1), default=320,
                   help="longest side of a GIF panel in pixels")  # fmt: skip
    p.add_argument(
        "--flow", default=None, help="write the dense B->A flow (.npz: flow, valid, score)"
    )
    p.add_argument(
        "--pca", default=None, help="write A | B in joint PCA colours of the features (PNG)"
    )
    p.add_argument("--pairs", default=None, help="file of 'A B' lines (paths relative to it)")
    p.add_argument("--out-dir", default=None, help="with --pairs: folder of each pair's outputs")
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    if args.pairs:  # many pairs: sdcorr.commands.batch
        from .batch import run as run_batch

        return run_batch(args)
    if not (args.image_a and args.image_b) or args.out_dir:
        raise OutputError("give two images A B (or --pairs FILE --out-dir DIR)")
    inputs = _validate(args)
    timings: dict[str, float] = {}
    steps = ["load models", "features", "match", "write"]
    with (
        Outputs() as outputs,
        tqdm(total=len(steps), desc="sdcorr match", disable=args.quiet or None) as bar,
    ):
        inputs["outputs"] = outputs
        for name in steps:
            bar.set_postfix_str(name)
            with stage(name, timings):
                inputs = _STEPS[name](args, inputs)
            bar.update()
    for kind, path in inputs["written"]:
        print(f"{kind}\t{path}")
    return 0


# ---------------------------------------------------------------------------- validation
def check_suffixes(args: argparse.Namespace) -> None:
    """The output options name files of the right kind (also for ``--pairs``)."""
    for opt, value, exts in (("--out", args.out, (".gif", ".png")), ("--flow", args.flow, (".npz",)),
                             ("--pca", args.pca, (".png",))):  # fmt: skip
        if value and Path(value).suffix.lower() not in exts:
            raise OutputError(f"{opt} must end in {' or '.join(exts)}, got {value}")


def _validate(args: argparse.Namespace) -> dict[str, Any]:
    outs = {
        "--out": args.out, "--json": args.json, "--plot": args.plot, "--flow": args.flow,
        "--pca": args.pca,
    }  # fmt: skip
    if not any(outs.values()):
        raise OutputError("nothing to write: give --out, --json, --plot, --flow and/or --pca")
    check_suffixes(args)
    check_distinct(outs)
    for p in outs.values():
        if p:
            check_writable(p)
    config = resolve_config(args)
    img_a, img_b = load_image(args.image_a), load_image(args.image_b)
    check_fits(config, img_a.size, f"image A ({args.image_a})")
    check_fits(config, img_b.size, f"image B ({args.image_b})")
    geo_a = Geometry(img_a.width, img_a.height, 1)
    points = _read_points(args.points, geo_a) if args.points else None
    return {
        "config": config,
        "img_a": img_a,
        "img_b": img_b,
        "points": points,
        "mask_a": _read_mask(args.mask_a, img_a.size),
        "mask_b": _read_mask(args.mask_b, img_b.size),
        "written": [],
    }


def _read_points(path: str, geo: Geometry) -> torch.Tensor:
    if Path(path).is_dir():
        raise PointsError(f"--points must be a JSON file, got a folder: {path}")
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PointsError(f"points file not found: {path}") from None
    except OSError as err:
        raise PointsError(f"points file cannot be read: {path} ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PointsError(f"points file is not valid JSON: {path}") from None
    if isinstance(data, dict):
        data = data.get("points", data.get("points_a"))
    try:
        pts = torch.tensor(data, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise PointsError(f"points file must hold a list of [x, y] pairs: {path}") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise PointsError(f"points file must hold a non-empty list of [x, y] pairs: {path}")
    return geo.check_inside(pts, f"points of {path}")


def _read_mask(path: str | None, size: tuple[int, int]) -> np.ndarray | str | None:
    if path is None or path == "auto":
        return path  # "auto": computed from the features once the models are loaded
    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L")) > 0
    except FileNotFoundError:
        raise ImageLoadError(f"mask file not found: {path}") from None
    except (OSError, Image.DecompressionBombError):
        load_image(path)  # raises the typed "not a readable image" / "too large" error
        raise
    if mask.shape != (size[1], size[0]):
        raise ImageLoadError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]}, image is {size[0]}x{size[1]}"
        )
    if not mask.any():
        raise ImageLoadError(f"mask {path} is empty")
    return mask


# ---------------------------------------------------------------------------- steps
def _load(args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    st["pipe"] = load_pipeline(args, st["config"])
    return st


def _features(args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    st["fa"], st["fb"] = st["pipe"].features(st["img_a"], st["img_b"], args.category)
    return st


def _match(args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    from ..match.dense import match_dense

    pipe, fa, fb = st["pipe"], st["fa"], st["fb"]
    pts = st["points"] if st["points"] is not None else _grid_points(fa, args.grid_step)
    flip = args.flip_align or pipe.config.match.flip_align
    if flip or "auto" in (str(st["mask_a"]), str(st["mask_b"])):
        return _match_with_images(args, st, pts, flip)
    st["matches"] = pipe.match_fused(
        fa,
        fb,
        pts,
        st["mask_a"],
        st["mask_b"],
        mutual=args.mutual,
        soft_argmax=args.soft_argmax or pipe.config.match.soft_argmax,
    )
    if args.out or args.flow:
        grid = args.dense_grid or None
        st["flow"] = match_dense(fa, fb, grid, pipe.config.match, st["mask_a"], st["mask_b"])
    return st


def _match_with_images(
    args: argparse.Namespace, st: dict[str, Any], pts: torch.Tensor, flip: bool
) -> dict[str, Any]:
    """Flip alignment and/or automatic masks: through the pipeline's image-level methods
    (the features computed in the previous step come from its cache)."""
    pipe, a, b = st["pipe"], st["img_a"], st["img_b"]
    if flip:  # recorded in the JSON's config
        pipe.config = replace(pipe.config, match=replace(pipe.config.match, flip_align=True))
    masks = {k: st[k] for k in ("mask_a", "mask_b")}
    soft = args.soft_argmax or pipe.config.match.soft_argmax
    st["matches"] = pipe.match_points(
        a, b, pts, args.category, **masks, mutual=args.mutual, soft_argmax=soft, flip_align=flip
    )
    if args.out or args.flow:
        grid = args.dense_grid or None
        st["flow"] = pipe.match_dense(a, b, args.category, grid, **masks, flip_align=flip)
    return st


def _grid_points(fa, step: int) -> torch.Tensor:
    """Every ``step``-th content cell of A; every cell when that grid misses a thin image."""
    geo = fa.geometry[0]
    pts = geo.grid_points(step)
    if len(pts) == 0 and step > 1:
        log.warning("no point of the every-%dth-cell grid lies on A; using every cell", step)
        pts = geo.grid_points(1)
    return pts


def _write(args: argparse.Namespace, st: dict[str, Any]) -> dict[str, Any]:
    from .. import viz

    out: Outputs = st["outputs"]
    if args.out:
        flow, tmp = st["flow"], out.stage(args.out)
        if Path(args.out).suffix.lower() == ".gif":
            # flow sampled at the GIF's size: memory does not grow with the input's megapixels
            frames = viz.swap_frames_from_flow(st["img_a"], st["img_b"], flow, args.max_side)
            viz.save_gif(frames, tmp, fps=args.fps)
        else:
            px, valid = flow.to_pixels("nearest").numpy(), flow.valid_pixels().numpy()
            swapped = viz.swap_image(st["img_a"], st["img_b"], px, mask_b=valid)
            viz.save_png(swapped, tmp)
        st["written"].append(("swap", args.out))
    if args.plot:
        a, b = np.asarray(st["img_a"]), np.asarray(st["img_b"])
        viz.plot_matches(a, b, st["matches"], path=out.stage(args.plot))
        st["written"].append(("plot", args.plot))
    if args.json:
        _write_json(args, st, out.stage(args.json))
        st["written"].append(("json", args.json))
    _write_flow_pca(args, st)
    return st


def _write_flow_pca(args: argparse.Namespace, st: dict[str, Any]) -> None:
    from ..match.dense import save_flow
    from ..viz import save_pca

    out: Outputs = st["outputs"]
    if args.flow:
        save_flow(out.stage(args.flow), st["flow"])
        st["written"].append(("flow", args.flow))
    if args.pca:
        save_pca(out.stage(args.pca), st["fa"], st["fb"])
        st["written"].append(("pca", args.pca))


def _write_json(args: argparse.Namespace, st: dict[str, Any], path: Path) -> None:
    from ..config import to_dict
    from ..io import write_json

    m = st["matches"]
    write_json(
        path,
        {
            "image_a": str(args.image_a),
            "image_b": str(args.image_b),
            "size_a": list(st["img_a"].size),
            "size_b": list(st["img_b"].size),
            "category": args.category,
            **m.to_dict(),
            "config": to_dict(st["pipe"].config),
        },
    )


_STEPS = {"load models": _load, "features": _features, "match": _match, "write": _write}
