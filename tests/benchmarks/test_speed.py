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
            "--keypoints", "5", "--gemm-size", "128", "--json", str(out)]  # fmt: skip
    assert _speed().main(argv) == 0
    return json.loads(out.read_text())


def _check_gemm_figures(r: dict) -> None:
    """The GEMM figures of one run are what their definitions say."""
    g = r["gemm"]
    labels = [p[0] for p in g["probes"]]
    assert labels[0] == "start" and labels[-1] == "end" and g["size"] == 128
    assert g["gflops_min"] <= g["gflops"] <= g["gflops_max"] and g["gflops_min"] > 0
    achieved = r["flops"] / r["wall_s"] / 1e9
    assert r["gemm_fraction"] == pytest.approx(achieved / g["gflops"], rel=1e-3, abs=1e-4)
    lo, hi = r["gemm_fraction_range"]
    assert lo <= r["gemm_fraction"] <= hi
    assert lo == pytest.approx(achieved / g["gflops_max"], rel=1e-3, abs=1e-4)
    for st in r["stages"].values():
        assert g["gflops_min"] <= st["gemm_gflops"] <= g["gflops_max"]
        if st["seconds"] > 0:
            rate = st["flops"] / st["seconds"] / 1e9
            assert st["gemm_fraction"] == pytest.approx(rate / st["gemm_gflops"], abs=1e-4)


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


def test_gemm_fractions_per_stage_and_overall(report):
    for part in ("pair", "workload"):
        for proc in ("baseline", "ours_exact"):
            _check_gemm_figures(report[part][proc])
    assert report["gemm_fraction"] == report["pair"]["ours_exact"]["gemm_fraction"]
    table = report["gemm_fractions"]["pair"]["ours_exact"]
    assert table["overall"] == report["gemm_fraction"]
    stages = report["pair"]["ours_exact"]["stages"]
    assert table["unet"] == stages["unet"]["gemm_fraction"]
    assert "load" not in table  # stages without FLOPs have no fraction in the table


def test_no_baseline_times_the_library_alone(tiny_models, tmp_path):
    out = tmp_path / "speed.json"
    argv = ["--quick", "--sd-model", str(tiny_models["sd"]), "--dino-model",
            str(tiny_models["dino"]), "--device", "cpu", "--no-baseline", "--skip-workload",
            "--keypoints", "5", "--gemm-size", "128", "--json", str(out)]  # fmt: skip
    assert _speed().main(argv) == 0
    r = json.loads(out.read_text())
    assert set(r["pair"]) & {"baseline", "ours_exact", "ours_fast"} == {"ours_exact"}
    assert r["ratio_pair"] is None and r["max_rel_feature_diff"] is None
    assert "optimisations" not in r and "baseline_flops_ratio_to_floor" not in r
    assert 1.0 <= r["flops_ratio_to_floor"] < 1.2
    _check_gemm_figures(r["pair"]["ours_exact"])
    assert r["gemm_fraction"] == r["pair"]["ours_exact"]["gemm_fraction"] > 0


def test_half_precision_without_native_kernels_stops_before_any_model(monkeypatch, capsys):
    from sdcorr import device

    speed = _speed()
    monkeypatch.setattr(device, "native_dtype", lambda dt, dev: dt == device.torch.float32)

    def no_build(*a, **k):
        raise AssertionError("models built before the dtype was checked")

    monkeypatch.setattr(speed, "build_random", no_build)
    assert speed.main(["--quick", "--device", "cpu", "--dtype", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "error: bfloat16 on this CPU has no native kernels" in err
    assert len(err.strip().splitlines()) == 1


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


def test_stage_clock_probes_are_neither_timed_nor_counted(monkeypatch):
    """A fake clock: the probe 'takes' 100 s and multiplies matrices; neither shows in the run,
    and each stage is referred to the mean of the probes just before and after it."""
    import time

    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from speedkit.clock import StageClock

    now = [0.0]
    rates = [1.0, 2.0, 0.5, 0.5]  # GFLOP/s
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    a, b = torch.randn(512, 512), torch.randn(64, 64)

    class Probe:
        dtype, size = torch.float32, 64

        def __call__(self) -> float:
            torch.mm(b, b)  # not counted
            now[0] += 100.0  # not timed
            return rates.pop(0)

    def work(seconds: float) -> None:
        torch.mm(a, a)
        now[0] += seconds

    with StageClock("cpu", probe=Probe(), probe_min_flops=0) as clock:
        with clock.stage("first"):
            work(2.0)
        with clock.stage("second"):
            work(1.0)
        now[0] += 1.0  # time outside any stage
    r = clock.report()
    gf = 2 * 512**3 / 1e9
    assert r["wall_s"] == 4.0 and r["flops"] == round(2 * gf * 1e9)
    assert [p[0] for p in r["gemm"]["probes"]] == ["start", "first", "second", "end"]
    st = r["stages"]
    assert st["first"]["gemm_gflops"] == 1.5 and st["second"]["gemm_gflops"] == 1.25
    assert st["other"]["gemm_gflops"] == 1.0  # mean of all probes
    assert r["gemm"]["gflops"] == pytest.approx((2 * 1.5 + 1.25 + 1.0) / 4, abs=0.01)
    assert st["first"]["gemm_fraction"] == pytest.approx(gf / 2.0 / 1.5, abs=1e-4)
    assert st["second"]["gemm_fraction"] == pytest.approx(gf / 1.0 / 1.25, abs=1e-4)
    lo, hi = r["gemm_fraction_range"]
    assert lo == pytest.approx(2 * gf / 4 / 2.0, abs=1e-4)
    assert hi == pytest.approx(2 * gf / 4 / 0.5, abs=1e-4)
