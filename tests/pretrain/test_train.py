"""A tiny CPU run end to end: finite losses, no collapse, bit-exact resume, exported backbone."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sdcorr.cli import main

STEPS = 50


@pytest.fixture(scope="module")
def run_dir(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 50-step tiny run (checkpoints after steps 25 and 50)."""
    out = tmp_path_factory.mktemp("pretrain-run")
    argv = ["-q", "pretrain", "--data", str(image_dir), "--out", str(out), "--preset", "tiny",
            "--steps", str(STEPS), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    return out


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_run_outputs_and_losses(run_dir: Path) -> None:
    log = _log(run_dir)
    assert [r["step"] for r in log] == list(range(STEPS))
    for r in log:
        for key in ("loss", "dino_local", "dino_global", "ibot", "koleo"):
            assert math.isfinite(r[key]), (r["step"], key)
    assert log[-1]["corrupt_files"] == 1
    assert log[0]["teacher_temp"] == pytest.approx(0.04) and log[-1]["momentum"] == 1.0
    assert any(r["n_masked"] > 0 for r in log) and any(r["ibot"] > 0 for r in log)
    assert {"lr", "wd", "momentum", "steps_per_s", "images_per_s"} <= set(log[-1])
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step_0000025.pt", "step_0000050.pt"]
    assert "effective_schedule:" in (run_dir / "config.yaml").read_text()


def test_every_line_has_collapse_diagnostics(run_dir: Path) -> None:
    for r in _log(run_dir):
        assert r["teacher_entropy_max"] == pytest.approx(math.log(16))  # tiny: 16 prototypes
        assert 0 <= r["teacher_entropy_image"] <= r["teacher_entropy_of_mean"] + 1e-5
        assert -1 <= r["teacher_cosine"] <= 1 + 1e-6


def test_collapse_warning(caplog) -> None:
    from sdcorr.pretrain.config import get_preset
    from sdcorr.pretrain.train import _warn_collapse

    cfg = get_preset("tiny")  # 50 steps, teacher temperature warm-up 15
    state = SimpleNamespace(step=20, warned_collapse=False)
    ok = {"step": 19, "teacher_entropy_image": 1.0, "teacher_entropy_max": 4.85,
          "teacher_cosine": 0.3}  # fmt: skip
    _warn_collapse(cfg, state, ok)
    _warn_collapse(cfg, state, {**ok, "step": 5, "teacher_cosine": 0.99})  # still warming up
    assert "collapsed" not in caplog.text
    _warn_collapse(cfg, state, {**ok, "teacher_cosine": 0.99})
    _warn_collapse(cfg, state, {**ok, "teacher_entropy_image": 4.8})  # once only
    assert caplog.text.count("looks collapsed at step 19") == 1
    state.step = 50
    _warn_collapse(cfg, state, {**ok, "step": 49, "teacher_entropy_image": 4.8})
    assert "looks collapsed at step 49" in caplog.text  # and again at the end


def _assert_same(a, b, path: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_resume_is_bit_exact(run_dir: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "config.yaml", out / "config.yaml")
    shutil.copy(run_dir / "checkpoints" / "step_0000025.pt", out / "checkpoints")
    log = _log(run_dir)
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log[:30]))
    assert main(["-q", "pretrain", "--data", str(image_dir), "--out", str(out), "--resume"]) == 0
    full = torch.load(run_dir / "checkpoints" / "step_0000050.pt", weights_only=False)
    resumed = torch.load(out / "checkpoints" / "step_0000050.pt", weights_only=False)
    for key in ("step", "student", "teacher", "optimizer", "centers", "rng"):
        _assert_same(full[key], resumed[key], key)
    relog = _log(out)  # steps 25-29 of the stale log were replaced, not duplicated
    assert [r["step"] for r in relog] == list(range(STEPS))
    for a, b in zip(log[25:], relog[25:], strict=True):
        assert (a["loss"], a["teacher_cosine"]) == (b["loss"], b["teacher_cosine"])


def test_exported_backbone_loads(run_dir: Path) -> None:
    from transformers import Dinov2Model

    from sdcorr.features.dino import ViTExtractor

    path = run_dir / "backbone"
    model = Dinov2Model.from_pretrained(path)
    assert model.config.drop_path_rate == 0.0 and model.config.layerscale_value == 1e-5
    teacher = torch.load(run_dir / "checkpoints" / "step_0000050.pt", weights_only=False)["teacher"]
    mine = model.state_dict()
    for k, v in teacher.items():
        if k.startswith("backbone."):
            assert torch.equal(mine[k.removeprefix("backbone.")], v), k
    ext = ViTExtractor.from_pretrained(str(path), device="cpu", image_size=56)
    feats = ext.forward_pixels(torch.randn(2, 3, 56, 56))
    assert feats.shape == (2, 32, 4, 4) and torch.isfinite(feats).all()


def test_exported_backbone_drives_match(
    run_dir: Path, image_dir: Path, tiny_models, tmp_path
) -> None:
    a, b = image_dir / "img0.jpg", image_dir / "img2.png"
    png = tmp_path / "swap.png"
    argv = ["match", str(a), str(b), "--out", str(png), "--dino-model", str(run_dir / "backbone"),
            "--sd-model", str(tiny_models["sd"]), "--device", "cpu",
            "--sd-frame", "192", "--sd-tile", "128", "--dino-frame", "224"]  # fmt: skip
    assert main(argv) == 0
    assert png.is_file() and png.stat().st_size > 0


def test_cli_user_errors(tmp_path: Path, image_dir: Path, capsys) -> None:
    base = ["pretrain", "--out", str(tmp_path / "o"), "--preset", "tiny"]
    assert main([*base, "--data", str(tmp_path / "missing")]) == 2
    assert (
        main(["pretrain", "--data", str(image_dir), "--out", str(tmp_path), "--preset", "x"]) == 2
    )
    assert main([*base, "--data", str(image_dir), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "data folder not found" in err and "unknown pretrain preset" in err
    assert "--resume" in err
