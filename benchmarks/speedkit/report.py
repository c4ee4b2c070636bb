"""Checks and figures derived from the runs: feature differences, NN agreement, ratios, projection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sdcorr.match.dense import DenseFlow
from sdcorr.pipeline import ImageFeatures

SPAIR_TEST_PAIRS = 12_234
# Upper bound on distinct SPair-71k test images: 18 categories x 100 images = 1,800 images in
# the whole dataset, and the splits use disjoint images (reference/spair-and-peers.md §A.1).
SPAIR_TEST_IMAGES = 1_800
EXTRACTION_STAGES = ("load", "vae_encode", "vae_decode", "unet", "text_encoder", "dino", "other")
PER_PAIR_STAGES = ("fusion", "matching")


def max_rel_diff(
    ours: Mapping[int, ImageFeatures], base: Mapping[int, ImageFeatures]
) -> dict[str, float]:
    """``{map: max |ours - base| / max |base|}`` over the images both hold, plus ``"max"``."""
    out: dict[str, float] = {}
    for i in sorted(set(ours) & set(base)):
        for name, b in base[i].maps.items():
            o = ours[i].maps[name].features.float().cpu()
            bf = b.features.float().cpu()
            rel = (o - bf).abs().max().item() / max(bf.abs().max().item(), 1e-30)
            out[name] = max(out.get(name, 0.0), rel)
    out["max"] = max(out.values(), default=float("nan"))
    return out


def nn_agreement(fast: Sequence[DenseFlow], exact: Sequence[DenseFlow]) -> float:
    """Fraction of matched B cells whose nearest A cell is the same in both flows."""
    same = total = 0
    for f, e in zip(fast, exact, strict=True):
        ok = e.valid & f.valid
        same += int((f.cells_a == e.cells_a).all(-1)[ok].sum())
        total += int(ok.sum())
    return same / max(total, 1)


def keypoint_agreement(fast: Sequence[Any], exact: Sequence[Any]) -> float:
    """Fraction of transferred keypoints landing on the same point in both runs."""
    same = total = 0
    for f, e in zip(fast, exact, strict=True):
        same += int(torch.isclose(f.points_b, e.points_b).all(-1).sum())
        total += len(e)
    return same / max(total, 1)


def seconds(report: Mapping[str, Any], stages: Sequence[str]) -> float:
    """Summed seconds of ``stages`` in a clock report."""
    return sum(report["stages"].get(s, {}).get("seconds", 0.0) for s in stages)


def projection(
    workload: Mapping[str, Any],
    n_images: int,
    n_pairs: int,
    spair_pairs: int = SPAIR_TEST_PAIRS,
    spair_images: int = SPAIR_TEST_IMAGES,
) -> dict[str, Any]:
    """SPair-71k test time from a workload run with per-image reuse.

    ``projected_s = spair_images * per_image_s + spair_pairs * per_pair_s``, where
    ``per_image_s`` = extraction time of the workload / its distinct images and ``per_pair_s``
    = fusion + matching time / its pairs.
    """
    per_image = seconds(workload, EXTRACTION_STAGES) / n_images
    per_pair = seconds(workload, PER_PAIR_STAGES) / n_pairs
    total = spair_images * per_image + spair_pairs * per_pair
    return {
        "formula": "spair_images * per_image_s + spair_pairs * per_pair_s",
        "per_image_s": round(per_image, 4),
        "per_pair_s": round(per_pair, 4),
        "spair_images": spair_images,
        "spair_pairs": spair_pairs,
        "projected_s": round(total, 1),
        "projected_h": round(total / 3600, 3),
    }


def baseline_projection(
    workload: Mapping[str, Any], n_pairs: int, spair_pairs: int = SPAIR_TEST_PAIRS
) -> dict[str, Any]:
    """The reference procedure recomputes both images per pair: ``pairs * per_pair_s``."""
    per_pair = workload["wall_s"] / n_pairs
    total = spair_pairs * per_pair
    return {
        "formula": "spair_pairs * per_pair_s (both images re-extracted per pair)",
        "per_pair_s": round(per_pair, 4),
        "projected_s": round(total, 1),
        "projected_h": round(total / 3600, 3),
    }


def stage_table(named: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table of seconds / GFLOPs / peak host MB per stage for several runs."""
    names = list(named)
    stages = sorted({s for r in named.values() for s in r["stages"]})
    head = f"{'stage':<14}" + "".join(f"{n + ' s':>16}{'GFLOP':>11}{'host MB':>9}" for n in names)
    lines = [head]
    for s in [*stages, "TOTAL"]:
        row = f"{s:<14}"
        for n in names:
            r = named[n]
            st = r["stages"].get(s) if s != "TOTAL" else None
            sec = r["wall_s"] if s == "TOTAL" else (st or {}).get("seconds", 0.0)
            fl = r["flops"] if s == "TOTAL" else (st or {}).get("flops", 0)
            mb = r["peak_host_mb"] if s == "TOTAL" else (st or {}).get("peak_host_mb", 0.0)
            row += f"{sec:>16.3f}{fl / 1e9:>11.1f}{mb:>9.0f}"
        lines.append(row)
    return "\n".join(lines)
