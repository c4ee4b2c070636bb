"""Speed benchmark: our fused SD-DINO path against the reference procedure, same process.

Measures, per stage (load, VAE encode, [VAE decode], text encoder, U-Net, DINOv2, fusion/PCA,
matching, GIF, other), wall time, FLOPs (``torch.utils.flop_counter``) and peak host/CUDA
memory for (a) one image pair and (b) a workload of N pairs over M recurring images, for:

* ``baseline``: the reference procedure (per image, per tile, uncached prompt, VAE decoder
  run, full U-Net, every pair from scratch, unchunked similarity), fp32;
* ``ours_exact``: the library in fp32 (must give the baseline's raw features, rel. < 1e-4);
* ``ours_fast``: the library in half precision (fp16 on CUDA by default) with
  ``channels_last`` and optional ``torch.compile``, when any of those is on.

Full-size random-weight models from the real configs are built unless ``--sd-model`` and
``--dino-model`` give folders. See the README, section "Speed".

Example:
    python benchmarks/speed.py --quick --json speed.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speedkit.baseline import build_decoder
from speedkit.floor import floor_flops
from speedkit.gemm import GemmProbe, default_size
from speedkit.models import Frames, Models, build_random, extractors, load_folders
from speedkit.report import baseline_projection, projection, stage_table
from speedkit.runs import (
    Baseline,
    Ours,
    keypoints,
    make_images,
    measure_gif,
    measure_pair,
    measure_workload,
    timed_then_counted,
    workload_pairs,
)
from speedkit.summary import gemm_table, optimisation_effects, summarise

from sdcorr.cache import FeatureCache
from sdcorr.device import resolve_device, resolve_dtype
from sdcorr.errors import SdcorrError
from sdcorr.features.accel import prefers_channels_last
from sdcorr.features.dino import ViTExtractor
from sdcorr.features.sd import SDFeatureExtractor, tile_offsets
from sdcorr.io import atomic_path

log = logging.getLogger("sdcorr.speed")
QUICK = Frames(sd_frame=192, sd_tile=128, dino_frame=224)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--quick", action="store_true", help="SD 192 frame/128 tiles, DINO 224, 3 pairs/3 images")
    a("--json", default=None, help="write the report to this file")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    a("--dtype", default="auto", help="fast-path dtype: auto (fp16 on CUDA, fp32 on CPU), bf16")
    a("--channels-last", choices=("auto", "on", "off"), default="auto",
      help="fast-path SD layout; auto: on CUDA, the library default (on) on CPU")  # fmt: skip
    a("--compile", action="store_true", help="torch.compile the model blocks of the fast path")
    a("--attention", choices=("sdpa", "xformers"), default="sdpa", help="fast-path attention")
    a("--sd-model", default=None, help="diffusers SD folder (default: random full-size)")
    a("--dino-model", default=None, help="transformers DINOv2 folder (default: random)")
    a("--sd-frame", type=int, default=None, help="SD frame (default 960; quick 192)")
    a("--sd-tile", type=int, default=None, help="SD tile, 0 = no tiling (default 512)")
    a("--dino-frame", type=int, default=None, help="DINO frame (default 840; quick 224)")
    a("--workload-frames", default=None, help="SD_FRAME,SD_TILE,DINO_FRAME for the workload")
    a("--pairs", type=int, default=None, help="workload pairs N (default 6; quick 3)")
    a("--images", type=int, default=None, help="workload images M (default 4; quick 3)")
    a("--image-dir", default=None, help="use these images (sorted *.jpg/*.png) instead")
    a("--keypoints", type=int, default=20, help="keypoints transferred per pair")
    a("--batch-size", type=int, default=8, help="tiles per VAE/U-Net forward (ours)")
    a("--no-decoder", action="store_true", help="baseline skips the VAE decoder")
    a("--skip-workload", action="store_true", help="measure the pair only")
    a("--no-baseline", action="store_true", help="time the library alone (no reference run)")
    a("--gemm-size", type=int, default=None,
      help="side of the GEMM-rate probe (default 2048 on CPU, 8192 on CUDA; 0: no probe)")  # fmt: skip
    a("--warmup", type=int, default=None, help="untimed pair runs first (default: 1 on CUDA)")
    a(
        "--flops",
        choices=("auto", "same", "separate"),
        default="auto",
        help="count FLOPs in the timed run (same; CPU default) or a second run (separate; CUDA)",
    )
    a("--threads", type=int, default=None, help="torch CPU threads")
    a("--spair-images", type=int, default=1800, help="distinct images for the projection")
    return p.parse_args(argv)


# ---------------------------------------------------------------------- set-up
def frames_of(args: argparse.Namespace) -> tuple[Frames, Frames]:
    """The pair frames and the workload frames."""
    base = QUICK if args.quick else Frames()
    tile = base.sd_tile if args.sd_tile is None else (args.sd_tile or None)
    pair = Frames(args.sd_frame or base.sd_frame, tile, args.dino_frame or base.dino_frame)
    if not args.workload_frames:
        return pair, pair
    f, t, d = (int(v) for v in args.workload_frames.split(","))
    return pair, Frames(f, t or None, d)


def reframe(
    sd: SDFeatureExtractor, dino: ViTExtractor, frames: Frames
) -> tuple[SDFeatureExtractor, ViTExtractor]:
    """Extractors with other frames around the same (already placed) models."""
    from dataclasses import replace

    sd_cfg = replace(sd.config, frame=frames.sd_frame, tile_size=frames.sd_tile)
    new_sd = SDFeatureExtractor(
        sd.unet, sd.vae, sd.text_encoder, sd.tokenizer, sd.scheduler, sd_cfg, sd.device, sd.dtype
    )
    new_sd._prompt_cache = sd._prompt_cache
    new_sd.set_channels_last(sd.channels_last)
    dino_cfg = replace(dino.config, frame=frames.dino_frame)
    return new_sd, ViTExtractor(dino.model, dino_cfg, dino.device, dino.dtype)


def fast_settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The fast path's dtype and switches (``enabled`` False: no fast path). ``channels_last``
    ``None`` keeps the library's default layout (channels-last on CPU)."""
    dtype = resolve_dtype(args.dtype, device)
    cl = {"on": True, "off": False}.get(args.channels_last)
    if cl is None and device.type == "cuda":
        cl = True
    changed = cl is not None and cl != prefers_channels_last(device)
    on = dtype != torch.float32 or changed or args.compile or args.attention == "xformers"
    return {
        "enabled": on,
        "dtype": dtype,
        "channels_last": cl,
        "compile": args.compile,
        "attention": args.attention,
    }


def build_fast(models: Models, frames: Frames, device: torch.device, fast: dict, bs: int):
    """Fast-path extractors (cast copies of the models when the dtype is not fp32)."""
    sd, dino = extractors(models, frames, device, fast["dtype"], batch_size=bs)
    sd.optimize(channels_last=fast["channels_last"], compile=fast["compile"])
    dino.optimize(compile=fast["compile"])
    if fast["attention"] == "xformers":
        fast["xformers_used"] = sd.enable_xformers()
    return sd, dino


# ---------------------------------------------------------------------- running
def flops_mode(args: argparse.Namespace, device: torch.device) -> str:
    """``same`` (count while timing: CPU default, where kernels dwarf the counter) or
    ``separate`` (time without the counter, count in a second run: CUDA default)."""
    if args.flops != "auto":
        return args.flops
    return "separate" if device.type == "cuda" else "same"


def run_pairs(procs: dict[str, Any], paths, points, device, separate: bool, probes) -> dict:
    """(a) for every procedure (``probes``: procedure name -> GEMM probe or ``None``)."""
    out = {}
    for name, proc in procs.items():
        log.info("pair: %s", name)
        out[name] = timed_then_counted(
            lambda c, g, p=proc: measure_pair(p, paths, points, device, c, g),
            separate, probes.get(name),
        )  # fmt: skip
        log.info("pair: %s %.2f s", name, out[name].report["wall_s"])
    return out


def run_workloads(procs: dict[str, Any], paths, pairs, device, separate: bool, probes) -> dict:
    """(b) for every procedure."""
    pts = {i: keypoints(p, 20, seed=i) for i, p in enumerate(paths)}
    out = {}
    for name, proc in procs.items():
        log.info("workload: %s", name)
        out[name] = timed_then_counted(
            lambda c, g, p=proc: measure_workload(p, paths, pairs, pts.__getitem__, device,
                                                  FeatureCache, c, g),
            separate, probes.get(name),
        )  # fmt: skip
        log.info("workload: %s %.2f s", name, out[name].report["wall_s"])
    return out


def gemm_probes(args: argparse.Namespace, device: torch.device, fast: dict) -> dict:
    """One GEMM probe per procedure: fp32 for the baseline and the exact path, the fast path's
    dtype for it (none where that dtype has no native kernels, or with ``--gemm-size 0``)."""
    size = default_size(device) if args.gemm_size is None else args.gemm_size
    if size <= 0:
        return {}
    fp32 = GemmProbe(device, torch.float32, size)
    probes: dict[str, GemmProbe | None] = {"baseline": fp32, "ours_exact": fp32}
    dt = fast["dtype"]
    probes["ours_fast"] = fp32 if dt == torch.float32 else GemmProbe(device, dt, size)
    return probes


def environment(device: torch.device, models: Models, args: argparse.Namespace) -> dict:
    """Where and how the figures were taken."""
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "models": models.source,
        "argv": sys.argv[1:],
    }  # fmt: skip
    try:
        import diffusers
        import transformers

        env.update(diffusers=diffusers.__version__, transformers=transformers.__version__)
    except ImportError:
        pass
    return env


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the tables; write ``--json``. Returns the exit code."""
    args = parse_args(argv)
    args.pairs = args.pairs or (3 if args.quick else 6)
    args.images = args.images or (3 if args.quick else 4)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.allow_tf32 = False  # the exact path is compared at fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:  # user errors before any model is built
        device = resolve_device(args.device)
        fast = fast_settings(args, device)
    except SdcorrError as err:
        print(f"speed.py: error: {err}", file=sys.stderr)
        return 2
    pair_frames, wl_frames = frames_of(args)
    t0 = time.perf_counter()
    if args.sd_model and args.dino_model:
        models = load_folders(args.sd_model, args.dino_model)
    else:
        models = build_random()
    load_s = time.perf_counter() - t0
    report = run(args, models, device, fast, (pair_frames, wl_frames))
    report["load_s"] = round(load_s, 2)
    report["environment"] = environment(device, models, args)
    print_summary(report)
    if args.json:
        with atomic_path(Path(args.json)) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2, default=str))
        log.info("report written to %s", args.json)
    return 0


def build_procs(args, models: Models, device, fast: dict, frames: Frames) -> dict[str, Any]:
    """The procedures to measure: ``baseline`` (unless ``--no-baseline``), ``ours_exact`` and,
    when a switch is on, ``ours_fast``; all around the same models."""
    bs = args.batch_size
    sd, dino = extractors(models, frames, device, batch_size=bs)
    procs: dict[str, Any] = {}
    if not args.no_baseline:
        decoder = None if args.no_decoder else build_decoder(models.vae)
        procs["baseline"] = Baseline(sd, dino, decoder)
    procs["ours_exact"] = Ours(sd, dino)
    if fast["enabled"]:
        procs["ours_fast"] = Ours(*build_fast(models, frames, device, fast, bs))
    return procs


def input_images(args, tmp: Path) -> list[Path]:
    """``--image-dir`` photos or synthetic SPair-sized JPEGs."""
    if args.image_dir:
        found = sorted(p for e in ("*.jpg", "*.png") for p in Path(args.image_dir).glob(e))
        return found[: max(args.images, 2)]
    return make_images(max(args.images, 2), tmp)


def run(args, models: Models, device, fast: dict, frames: tuple[Frames, Frames]) -> dict:
    """Every measurement; the JSON report."""
    pair_frames, wl_frames = frames
    procs = build_procs(args, models, device, fast, pair_frames)
    probes = gemm_probes(args, device, fast)
    tmp = Path(tempfile.mkdtemp(prefix="sdcorr-speed-"))
    paths = input_images(args, tmp)
    points = keypoints(paths[0], args.keypoints)
    warm = args.warmup if args.warmup is not None else int(device.type == "cuda")
    t = time.perf_counter()
    for _ in range(warm):
        for proc in procs.values():  # first CUDA calls: context, kernels, algorithm choice
            measure_pair(proc, paths[:2], points, device, count_flops=False)
    warm_s = time.perf_counter() - t
    fast_name = "ours_fast" if "ours_fast" in procs else "ours_exact"
    separate = flops_mode(args, device) == "separate"
    pair_runs = run_pairs(procs, paths[:2], points, device, separate, probes)
    gif = measure_gif(paths[:2], pair_runs[fast_name].flows[0], device, tmp / "swap.gif")
    pair = summarise(pair_runs, "ours_fast")
    pair["gif"] = gif
    report: dict[str, Any] = {
        "ratio_pair": pair.get("ratio"),
        "max_rel_feature_diff": pair.get("max_rel_feature_diff", {}).get("max"),
        "frames": {"pair": asdict(pair_frames), "workload": asdict(wl_frames)},
        "fast_path": {k: str(v) for k, v in fast.items()},
        "warmup_s": round(warm_s, 2),
        "pair": pair,
    }
    wl = None
    if not args.skip_workload:
        wl = workload_part(args, procs, paths, device, wl_frames, pair_frames, probes)
        report["workload"] = wl
    report.update(headline(pair, wl))
    sd, dino = procs["ours_exact"].sd, procs["ours_exact"].dino
    report.update(floor_part(models, sd, dino, pair, pair_frames, wl, wl_frames, fast_name))
    if "baseline" in procs:
        report["optimisations"] = optimisation_effects(pair, wl)
    if wl is not None:
        report["projection_spair_test"] = spair_projection(args, wl, fast_name)
    report["cache"] = "sdcorr.cache.FeatureCache (memory LRU, no disk)"
    return report


def headline(pair: dict, wl: dict | None) -> dict[str, Any]:
    """Top-level figures: workload ratio, worst feature difference, GEMM fractions."""
    out: dict[str, Any] = {"gemm_fraction": pair["ours_exact"].get("gemm_fraction")}
    if "ours_fast" in pair:
        out["gemm_fraction_fast"] = pair["ours_fast"].get("gemm_fraction")
    out["gemm_fractions"] = {"pair": gemm_table(pair)}
    if wl is not None:
        out["gemm_fractions"]["workload"] = gemm_table(wl)
        if "ratio" in wl:
            out["ratio_workload"] = wl["ratio"]
            worst = pair["max_rel_feature_diff"]["max"], wl["max_rel_feature_diff"]["max"]
            out["max_rel_feature_diff"] = max(worst)
    return out


def spair_projection(args, wl: dict, fast_name: str) -> dict[str, Any]:
    """Projection of the workload's figures to the SPair-71k test split."""
    distinct = len({i for p in wl["pairs"] for i in p})
    out = {
        "ours": projection(wl[fast_name], distinct, args.pairs, spair_images=args.spair_images),
        "assumption": f"{args.spair_images} distinct test images (upper bound: 1,800 "
        "images in all of SPair-71k, splits disjoint), 12,234 test pairs, at the workload "
        "frames",
    }  # fmt: skip
    if "baseline" in wl:
        out["baseline"] = baseline_projection(wl["baseline"], args.pairs)
    return out


def floor_part(models, sd, dino, pair, pair_frames, wl, wl_frames, fast_name) -> dict:
    """Floor FLOPs per image (meta device) and our/the baseline's FLOPs relative to it."""
    out: dict[str, Any] = {"floor": {
        "definition": "VAE encoder + U-Net up to the last hooked module + DINOv2 up to the "
        "hooked block, once per distinct image; 'tiled' (faithful default, the floor of the "
        "ratios) runs every tile, 'single_pass' the whole SD frame as one latent",
    }}  # fmt: skip
    parts = {"pair": (pair, pair_frames, 2)}
    if wl is not None:
        distinct = len({i for p in wl["pairs"] for i in p})
        parts["workload"] = (wl, wl_frames, distinct)
    for name, (part, frames, n_img) in parts.items():
        n_tiles = len(tile_offsets(frames.sd_frame, frames.sd_tile)) ** 2
        fl = floor_flops(models.unet, models.vae, models.dino, sd.config.layers,
                         dino.config.layer, frames, n_tiles)  # fmt: skip
        floor = n_img * fl["tiled"]["total"]
        out["floor"][name] = {"frames": asdict(frames), "images": n_img, "per_image_flops": fl}
        part["flops_ratio_to_floor"] = round(part[fast_name]["flops"] / floor, 4)
        if "baseline" in part:
            part["baseline_flops_ratio_to_floor"] = round(part["baseline"]["flops"] / floor, 4)
    last = parts["workload" if wl is not None else "pair"][0]
    out["flops_ratio_to_floor"] = last["flops_ratio_to_floor"]
    if "baseline_flops_ratio_to_floor" in last:
        out["baseline_flops_ratio_to_floor"] = last["baseline_flops_ratio_to_floor"]
    return out


def workload_part(args, procs, paths, device, wl_frames, pair_frames, probes) -> dict:
    """(b) at the workload frames (extractors re-framed around the same models)."""
    if wl_frames != pair_frames:
        re = {}
        for name, proc in procs.items():
            sd, dino = reframe(proc.sd, proc.dino, wl_frames)
            if name == "baseline":
                re[name] = Baseline(sd, dino, proc.ref.decoder)
            else:
                re[name] = Ours(sd, dino)
        procs = re
    pairs = workload_pairs(args.pairs, args.images)
    runs = run_workloads(procs, paths[: args.images], pairs, device,
                         flops_mode(args, device) == "separate", probes)  # fmt: skip
    out = summarise(runs, "ours_fast")
    out["pairs"], out["images"] = pairs, args.images
    return out


def print_summary(report: dict) -> None:
    """Human-readable tables on stdout."""
    print("\n(a) one pair:", report["frames"]["pair"])
    parts = {
        k: v for k, v in report["pair"].items() if k in ("baseline", "ours_exact", "ours_fast")
    }
    print(stage_table(parts))
    print(f"gif: {report['pair']['gif']['seconds']:.3f} s (ours)")
    if "workload" in report:
        wl = report["workload"]
        print(f"\n(b) workload: {len(wl['pairs'])} pairs over {wl['images']} images",
              report["frames"]["workload"])  # fmt: skip
        print(stage_table({k: v for k, v in wl.items() if k in parts}))
        print("projection (SPair test):", json.dumps(report["projection_spair_test"]["ours"]))
    keys = ("ratio_pair", "ratio_workload", "max_rel_feature_diff", "flops_ratio_to_floor",
            "gemm_fraction", "gemm_fraction_fast")  # fmt: skip
    print("\n" + "  ".join(f"{k}={report.get(k)}" for k in keys if k in report))
    for part, table in report.get("gemm_fractions", {}).items():
        for name, row in table.items():
            print(f"gemm_fraction {part} {name}:", json.dumps(row))


if __name__ == "__main__":
    raise SystemExit(main())
