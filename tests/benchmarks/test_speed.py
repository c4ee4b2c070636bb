"""``benchmarks/speed.py --quick`` runs end to end on tiny models and writes a sound report."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "speed.py"
STAGES = {"vae_encode", "unet", "dino", "fusion", "matching", "other"}


def _speed():
    spec = importlib.util.spec_from_file_location("speed_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def report(tiny_models, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("speed") / "speed.json"
    argv = ["--quick", "--sd-model", str(tiny_models["sd"]), "--dino-model",
            str(tiny_models["dino"]), "--pairs", "3", "--images", "3", "--device", "cpu",
            "--keypoints", "5", "--json", str(out)]  # fmt: skip
    assert _speed().main(argv) == 0
    return json.loads(out.read_text())


def test_top_level_keys_and_values(report):
    for key in ("ratio_pair", "ratio_workload", "max_rel_feature_diff", "flops_ratio_to_floor"):
        assert isinstance(report[key], float), key
    assert report["ratio_pair"] > 0 and report["ratio_workload"] > 0
    assert report["max_rel_feature_diff"] < 1e-4  # the exact path equals the reference procedure
    assert 1.0 <= report["flops_ratio_to_floor"] < 1.2  # floor + text encoder, PCA, matching
    assert report["baseline_flops_ratio_to_floor"] > 2 * report["flops_ratio_to_floor"]


def test_per_stage_figures(report):
    for part in ("pair", "workload"):
        for proc in ("baseline", "ours_exact"):
            r = report[part][proc]
            assert set(r["stages"]) >= STAGES and r["wall_s"] > 0
            assert r["flops"] == sum(s["flops"] for s in r["stages"].values())
            assert r["peak_host_mb"] > 0
    base, ours = report["pair"]["baseline"]["stages"], report["pair"]["ours_exact"]["stages"]
    assert base["unet"]["calls"] == 8 and ours["unet"]["calls"] == 1  # 2 images x 4 tiles
    assert base["unet"]["flops"] > ours["unet"]["flops"]  # full U-Net vs early exit, same tiles
    assert base["vae_decode"]["calls"] == 8 and "vae_decode" not in ours
    assert base["text_encoder"]["calls"] == 8 and ours["text_encoder"]["calls"] <= 1
    assert report["pair"]["gif"]["seconds"] > 0


def test_workload_reuse_and_projection(report):
    wl = report["workload"]
    assert wl["pairs"] == [[0, 1], [0, 2], [1, 2]]
    assert wl["ours_exact"]["stages"]["dino"]["calls"] == 3  # one per distinct image
    assert wl["baseline"]["stages"]["dino"]["calls"] == 6
    proj = report["projection_spair_test"]["ours"]
    expected = proj["spair_images"] * proj["per_image_s"] + proj["spair_pairs"] * proj["per_pair_s"]
    assert proj["projected_s"] == pytest.approx(expected, rel=1e-3, abs=0.5)
    floor = report["floor"]["workload"]["per_image_flops"]
    assert floor["tiled"]["total"] == sum(v for k, v in floor["tiled"].items() if k != "total")


def test_cli_without_cuda_fails_cleanly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda"], capture_output=True, text=True
    )
    assert res.returncode == 2 and "CUDA" in res.stderr
    assert "Traceback" not in res.stderr


def test_gpu_check_without_cuda_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    res = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=60,
    )
    assert res.returncode == 3
    assert "no CUDA device" in res.stdout
    assert not (tmp_path / "out" / "speed.json").exists()


@pytest.mark.cuda
def test_quick_on_cuda_has_a_fast_path(tiny_models, tmp_path):
    out = tmp_path / "speed.json"
    argv = ["--quick", "--sd-model", str(tiny_models["sd"]), "--dino-model",
            str(tiny_models["dino"]), "--device", "cuda", "--json", str(out)]  # fmt: skip
    assert _speed().main(argv) == 0
    r = json.loads(out.read_text())
    assert r["max_rel_feature_diff"] < 1e-4
    assert "ours_fast" in r["pair"] and r["fast_path"]["dtype"] == "torch.float16"
    assert 0.0 <= r["pair"]["fast_vs_exact"]["dense_nn_agreement"] <= 1.0
    assert r["pair"]["ours_fast"]["peak_cuda_mb"] > 0
