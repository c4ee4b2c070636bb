"""The figures of one part ((a) one pair or (b) the workload) derived from its runs."""

from __future__ import annotations

from typing import Any

from .report import keypoint_agreement, max_rel_diff, nn_agreement
from .runs import Run


def summarise(part: dict[str, Run], fast_name: str) -> dict[str, Any]:
    """Ratios, differences and agreements of one part ((a) or (b)); without a ``baseline`` run
    (``--no-baseline``) only the fast-vs-exact figures."""
    exact = part["ours_exact"]
    best = part.get(fast_name, exact)
    out: dict[str, Any] = {name: r.report for name, r in part.items()}
    base = part.get("baseline")
    if base is not None:
        out["ratio"] = round(base.report["wall_s"] / best.report["wall_s"], 3)
        out["ratio_exact"] = round(base.report["wall_s"] / exact.report["wall_s"], 3)
        out["flops_ratio_baseline_over_ours"] = round(
            base.report["flops"] / best.report["flops"], 3
        )
        out["max_rel_feature_diff"] = max_rel_diff(exact.raw, base.raw)
    if fast_name in part:
        fast = part[fast_name]
        out["fast_vs_exact"] = {
            "max_rel_feature_diff": max_rel_diff(fast.raw, exact.raw),
            "dense_nn_agreement": round(nn_agreement(fast.flows, exact.flows), 5),
            "keypoint_agreement": round(keypoint_agreement(fast.matches, exact.matches), 5),
            "seconds_fast_over_exact": round(fast.report["wall_s"] / exact.report["wall_s"], 4),
        }
    return out


def gemm_table(part: dict[str, Any]) -> dict[str, Any]:
    """``{run: {"overall": fraction, "range": [lo, hi], stage: fraction, ...}}`` of one part
    (runs measured with a GEMM probe only)."""
    out: dict[str, Any] = {}
    for name in ("baseline", "ours_exact", "ours_fast"):
        r = part.get(name)
        if not r or "gemm_fraction" not in r:
            continue
        row = {"overall": r["gemm_fraction"], "range": r["gemm_fraction_range"],
               "gemm_gflops": r["gemm"]["gflops"]}  # fmt: skip
        row.update({k: st["gemm_fraction"] for k, st in r["stages"].items() if st["flops"]})
        out[name] = row
    return out


def optimisation_effects(pair: dict[str, Any], wl: dict[str, Any] | None) -> dict[str, Any]:
    """Where each optimisation shows in the stage figures (baseline vs ours_exact)."""
    b, o = pair["baseline"]["stages"], pair["ours_exact"]["stages"]

    def g(st: dict, k: str, f: str = "seconds") -> float:
        return st.get(k, {}).get(f, 0)

    out = {
        "unet_early_exit_and_batching": {
            "baseline_s": g(b, "unet"), "ours_s": g(o, "unet"),
            "baseline_flops": g(b, "unet", "flops"), "ours_flops": g(o, "unet", "flops"),
            "baseline_calls": g(b, "unet", "calls"), "ours_calls": g(o, "unet", "calls"),
        },
        "no_vae_decoder": {"baseline_s": g(b, "vae_decode"), "ours_s": g(o, "vae_decode"),
                           "baseline_flops": g(b, "vae_decode", "flops")},
        "tiles_and_images_batched_vae": {
            "baseline_s": g(b, "vae_encode"), "ours_s": g(o, "vae_encode"),
            "baseline_calls": g(b, "vae_encode", "calls"), "ours_calls": g(o, "vae_encode", "calls"),
        },
        "cached_prompt": {"baseline_s": g(b, "text_encoder"), "ours_s": g(o, "text_encoder"),
                          "baseline_calls": g(b, "text_encoder", "calls"),
                          "ours_calls": g(o, "text_encoder", "calls")},
        "chunked_similarity": {"baseline_s": g(b, "matching"), "ours_s": g(o, "matching"),
                               "baseline_peak_host_mb": g(b, "matching", "peak_host_mb"),
                               "ours_peak_host_mb": g(o, "matching", "peak_host_mb")},
    }  # fmt: skip
    if wl is not None:
        bw, ow = wl["baseline"], wl["ours_exact"]
        out["per_image_reuse"] = {
            "baseline_dino_calls": g(bw["stages"], "dino", "calls"),
            "ours_dino_calls": g(ow["stages"], "dino", "calls"),
            "cache": ow.get("cache", {}),
        }
    return out
