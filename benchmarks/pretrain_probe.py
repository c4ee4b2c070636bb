"""Does a pretrained backbone carry correspondence? A probe for ``sdcorr pretrain`` outputs.

Usage::

    python benchmarks/pretrain_probe.py --backbone OUT/backbone --json probe.json
    python benchmarks/pretrain_probe.py --random-init OUT/config.yaml --json probe.json
    python benchmarks/pretrain_probe.py --backbone DIR --spair-root SPair-71k --json probe.json

(a) Warp probe: every photo (default: the spair-mini JPEGs) is warped synthetically (zoom,
horizontal flip, colour change, and all three at once), so the true source of every pixel is
known. Each patch of the warped image is matched to its nearest photo patch (cosine of the
backbone's last-layer patch tokens); a hit is a match within ``alpha * size`` pixels of the
true source (alpha 0.1). Reported: the hit rate per warp and their mean.

(b) With ``--spair-root``: PCK@0.1 (per image, bbox threshold) of the ``dino`` pipeline preset
with this backbone on that SPair-71k folder, through :mod:`sdcorr.eval` (runner and PCK code).

``--random-init CONFIG`` probes the weights a run starts from: the teacher backbone built by
``sdcorr pretrain`` from that config (``OUT/config.yaml``) before any step.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sdcorr.features.dino import IMAGENET_MEAN as MEAN
from sdcorr.features.dino import IMAGENET_STD as STD

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO / "tests" / "data" / "spair-mini" / "SPair-71k" / "JPEGImages"
ZOOM = 0.6  # the zoom warp shows the central 60 % of the photo

Warp = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- warps
def zoom(img: torch.Tensor) -> torch.Tensor:
    """``(B, 3, S, S)`` → the central ``ZOOM`` fraction resized back to ``S`` (bicubic)."""
    s = img.shape[-1]
    c0 = round(s * (1 - ZOOM) / 2)
    c1 = s - c0
    crop = img[..., c0:c1, c0:c1]
    return F.interpolate(crop, size=(s, s), mode="bicubic", align_corners=False,
                         antialias=True).clamp(0, 1)  # fmt: skip


def zoom_source(p: torch.Tensor, s: int) -> torch.Tensor:
    """Photo pixel coordinates ``(N, 2)`` of points ``p`` of the zoomed image."""
    c0 = round(s * (1 - ZOOM) / 2)
    return c0 + p * (s - 2 * c0) / s


def flip(img: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of ``(B, 3, S, S)``."""
    return img.flip(-1)


def flip_source(p: torch.Tensor, s: int) -> torch.Tensor:
    """Photo coordinates of points ``p`` of the flipped image."""
    return torch.stack([s - p[:, 0], p[:, 1]], 1)


def colour(img: torch.Tensor) -> torch.Tensor:
    """A fixed colour change: brightness +0.2, contrast x0.7, saturation x0.4, hue +0.1 turn."""
    import kornia.enhance as E

    x = E.adjust_brightness(img, 0.2)
    x = E.adjust_contrast(x, 0.7)
    x = E.adjust_saturation(x, 0.4)
    x = E.adjust_hue(x, 0.1 * 2 * torch.pi)
    return x.clamp(0, 1)


def _identity(p: torch.Tensor, s: int) -> torch.Tensor:
    return p


WARPS: dict[str, tuple[Warp, Callable[[torch.Tensor, int], torch.Tensor]]] = {
    "zoom": (zoom, zoom_source),
    "flip": (flip, flip_source),
    "colour": (colour, _identity),
    "all": (lambda x: colour(flip(zoom(x))), lambda p, s: zoom_source(flip_source(p, s), s)),
}


# --------------------------------------------------------------------------- features
def load_images(folder: Path, size: int) -> torch.Tensor:
    """Every image under ``folder`` as ``(B, 3, size, size)`` in [0, 1] (squashed, bicubic)."""
    from sdcorr.pretrain.data import list_images, load_rgb

    imgs = [
        F.interpolate(load_rgb(p)[None], size=(size, size), mode="bicubic", align_corners=False,
                      antialias=True)[0].clamp(0, 1)
        for p in list_images(folder)
    ]  # fmt: skip
    return torch.stack(imgs)


def load_backbone(path: str | Path) -> torch.nn.Module:
    """A ``Dinov2Model`` / ``Dinov2WithRegistersModel`` folder, fp32, eval mode."""
    from sdcorr.pretrain.init import load_pretrained

    return load_pretrained(path)


@torch.no_grad()
def patch_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised last-layer patch tokens: ``(B, 3, S, S)`` → ``(B, h*w, D)``."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
    out = []
    for x in images.split(4):
        tokens = model(pixel_values=(x - mean) / std).last_hidden_state[:, prefix:]
        out.append(F.normalize(tokens.float(), dim=-1))
    return torch.cat(out)


def cell_centres(grid: int, patch: int) -> torch.Tensor:
    """``(grid*grid, 2)`` pixel ``(x, y)`` centres of the patch cells, row-major."""
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) * patch
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], 1)


def nn_hits(photo: torch.Tensor, warped: torch.Tensor, true_src: torch.Tensor,
            centres: torch.Tensor, radius: float) -> torch.Tensor:  # fmt: skip
    """Hits of the warped→photo nearest neighbours.

    Args:
        photo, warped: ``(B, N, D)`` normalised patch features.
        true_src: ``(N, 2)`` true photo coordinates of the warped cells' centres.
        centres: ``(N, 2)`` photo cell centres.
        radius: a hit lies within ``radius`` pixels of the true source.

    Returns:
        ``(B, N)`` bool.
    """
    nn_idx = torch.einsum("bnd,bmd->bnm", warped, photo).argmax(-1)  # (B, N)
    pred = centres[nn_idx]  # (B, N, 2)
    return (pred - true_src[None]).norm(dim=-1) <= radius


def warp_probe(model: torch.nn.Module, images: torch.Tensor, alpha: float = 0.1
               ) -> dict[str, float]:  # fmt: skip
    """Hit rate of each warp (and ``mean``) for ``(B, 3, S, S)`` photos in [0, 1]."""
    s = images.shape[-1]
    patch = int(model.config.patch_size)
    if s % patch:
        raise ValueError(f"--size {s} is not a multiple of the patch size {patch}")
    centres = cell_centres(s // patch, patch)
    photo = patch_features(model, images)
    out = {}
    for name, (warp, source) in WARPS.items():
        hits = nn_hits(photo, patch_features(model, warp(images)), source(centres, s), centres,
                       alpha * s)  # fmt: skip
        out[name] = hits.float().mean().item()
    out["mean"] = sum(out.values()) / len(WARPS)
    return out


# --------------------------------------------------------------------------- SPair
def spair_pck(backbone: Path, root: Path, work: Path, dino_frame: int | None) -> dict[str, Any]:
    """``dino``-preset PCK@0.1 (bbox) of ``backbone`` on every test pair under ``root``."""
    import dataclasses

    from sdcorr.config import get_preset, with_models
    from sdcorr.eval.protocol import resolve_protocol
    from sdcorr.eval.runner import ModelPredictor, evaluate
    from sdcorr.eval.spair import load_spair
    from sdcorr.pipeline import SDDino

    cfg = with_models(get_preset("dino"), None, str(backbone))
    if dino_frame:
        cfg = dataclasses.replace(cfg, dino=dataclasses.replace(cfg.dino, frame=dino_frame))
    pairs = load_spair(root, "test")
    pipe = SDDino.from_pretrained(device="cpu", dtype=torch.float32, config=cfg)
    config = {"eval": {"dataset": "SPair-71k", "root": str(root), "split": "test",
                       "n_pairs": len(pairs), "alphas": [0.1], "threshold": "bbox"},
              "pipeline": dataclasses.asdict(cfg)}  # fmt: skip
    protocol = resolve_protocol("spair", alphas=(0.1,))
    summary = evaluate(pairs, ModelPredictor(pipe, use_category=False), work, config, protocol,
                       quiet=True)  # fmt: skip
    from sdcorr.eval.pck import alpha_key

    table = summary["pck"][alpha_key(0.1)]
    return {"pck@0.1_per_image": table["per_image"], "pck@0.1_per_keypoint": table["per_keypoint"],
            "n_pairs": table["n_pairs"], "dino_frame": cfg.dino.frame}  # fmt: skip


# --------------------------------------------------------------------------- main
def random_init_backbone(config: Path, folder: Path) -> Path:
    """Write the teacher backbone that a run with ``config`` starts from; return its folder."""
    from sdcorr.errors import ConfigError
    from sdcorr.pretrain.checkpoint import export_backbone
    from sdcorr.pretrain.config import load_yaml
    from sdcorr.pretrain.heads import SSLModel

    cfg = load_yaml(config)
    if cfg.model.init:
        raise ConfigError(f"{config} starts from {cfg.model.init}, not from a random init")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.run.seed)  # as sdcorr.pretrain.train.build_state
        model = SSLModel(cfg.model, drop_path=0.0)
    return export_backbone(model.backbone.state_dict(), model.backbone.config, folder,
                           cfg.data.global_size)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The probe's argument parser."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--backbone", help="Dinov2Model folder (e.g. OUT/backbone) or hub id")
    src.add_argument("--random-init", metavar="CONFIG",
                     help="probe the random init of this pretrain config (OUT/config.yaml)")  # fmt: skip
    p.add_argument("--json", required=True, help="write the results here")
    p.add_argument("--images", default=str(DEFAULT_IMAGES), help="photos of the warp probe")
    p.add_argument("--size", type=int, default=224, help="probe image side (multiple of patch)")
    p.add_argument("--alpha", type=float, default=0.1, help="hit radius, fraction of --size")
    p.add_argument("--spair-root", help="SPair-71k folder: also report dino-preset PCK@0.1")
    p.add_argument("--dino-frame", type=int, help="DINOv2 frame of the SPair run (preset: 840)")
    p.add_argument("--label", help="name of this row in the JSON")
    return p


def run(args: argparse.Namespace) -> int:
    """Probe as ``args`` say; write ``--json``."""
    from sdcorr.hub import resolve_model
    from sdcorr.io import write_json

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        work = Path(tmp)
        if args.random_init:
            path = random_init_backbone(Path(args.random_init), work)
        else:
            path = resolve_model(args.backbone, "dino")
        model = load_backbone(path)
        images = load_images(Path(args.images), args.size)
        result: dict[str, Any] = {
            "label": args.label or str(args.backbone or f"random init of {args.random_init}"),
            "backbone": str(args.backbone) if args.backbone else None,
            "random_init": str(args.random_init) if args.random_init else None,
            "images": str(args.images), "n_images": len(images), "size": args.size,
            "alpha": args.alpha, "warp_nn_accuracy": warp_probe(model, images, args.alpha),
        }  # fmt: skip
        if args.spair_root:
            result["spair"] = spair_pck(path, Path(args.spair_root), work / "spair",
                                        args.dino_frame)  # fmt: skip
    write_json(args.json, result)
    print(json.dumps(result, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 on success, 2 on a user error (one line)."""
    from sdcorr.cli import run_guarded

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return run_guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
