"""Never lose a run: NaN loss, occupied OUT, signals, kills during checkpoint writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sdcorr.cli import main
from sdcorr.pretrain import checkpoint as ckpt
from sdcorr.pretrain import train
from sdcorr.pretrain.data import PretrainBatches

REPO = Path(__file__).resolve().parents[2]


def _argv(image_dir: Path, out: Path, steps: int, every: int = 100) -> list[str]:
    cfg = out.parent / f"{out.name}-every.yaml"
    cfg.write_text(f"run:\n  checkpoint_every: {every}\n")
    return ["-q", "pretrain", "--data", str(image_dir), "--out", str(out), "--preset", "tiny",
            "--steps", str(steps), "--device", "cpu", "--config", str(cfg)]  # fmt: skip


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


def _names(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def test_nan_in_the_data_stops_at_once_and_keeps_checkpoints(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    getitem = PretrainBatches.__getitem__

    def poisoned(self, step):
        batch = getitem(self, step)
        if step == 3:
            batch["global_crops"][0, 0, 0, 0] = float("nan")
        return batch

    monkeypatch.setattr(PretrainBatches, "__getitem__", poisoned)
    out = tmp_path / "run"
    assert main(_argv(image_dir, out, steps=6, every=2)) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "non-finite loss" in errors[0] and "at step 3" in errors[0]
    assert _names(out) == ["step_0000002.pt"]  # the last good checkpoint is kept
    assert _steps(out) == [0, 1, 2] and not (out / "backbone").exists()
    saved = torch.load(out / "checkpoints" / "step_0000002.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in saved["student"].values())
    assert saved["step"] == 2


def test_fresh_run_into_an_occupied_out(image_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(_argv(image_dir, out, steps=2)) == 0
    before = (out / "checkpoints" / "step_0000002.pt").read_bytes()
    log = (out / "log.jsonl").read_text()
    capsys.readouterr()
    assert main(_argv(image_dir, out, steps=2)) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (out / "checkpoints" / "step_0000002.pt").read_bytes() == before
    assert (out / "log.jsonl").read_text() == log
    assert main([*_argv(image_dir, out, steps=2), "--resume", "--overwrite"]) == 2
    assert main([*_argv(image_dir, out, steps=3), "--overwrite"]) == 0
    assert _names(out) == ["step_0000003.pt"] and _steps(out) == [0, 1, 2]


def test_sigterm_checkpoints_and_resume_survives_torn_files(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step_fn = train.train_step

    def step_then_signal(state, batch, *args):
        out = step_fn(state, batch, *args)
        if int(batch["step"]) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # handled: the loop stops after this step
        return out

    monkeypatch.setattr(train, "train_step", step_then_signal)
    out = tmp_path / "run"
    previous = signal.getsignal(signal.SIGTERM)
    assert main(_argv(image_dir, out, steps=6)) == 130
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored
    assert _names(out) == ["step_0000003.pt"] and _steps(out) == [0, 1, 2]
    monkeypatch.setattr(train, "train_step", step_fn)
    # a kill can tear the last log line and leave a temporary checkpoint behind
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 7.1')
    tmp = out / "checkpoints" / ".step_0000004.0123abcd.tmp.pt"
    tmp.write_bytes(b"half a checkpoint")
    resume = ["-q", "pretrain", "--data", str(image_dir), "--out", str(out), "--resume"]
    assert main(resume) == 0
    assert _steps(out) == list(range(6)) and not tmp.exists()
    assert _names(out) == ["step_0000003.pt", "step_0000006.pt"]


def test_unreadable_newest_checkpoint_falls_back(tmp_path: Path) -> None:
    for step in (2, 4):
        state = {key: {} for key in ckpt.REQUIRED_KEYS}
        ckpt.save_checkpoint(tmp_path, step, {**state, "step": step}, keep=3)
    newest = ckpt.checkpoint_path(tmp_path, 4)
    newest.write_bytes(newest.read_bytes()[:20])  # truncated
    assert ckpt.load_latest(tmp_path)["step"] == 2


KILLER = """
import os, signal, sys, torch
real = torch.save
def save(obj, f, *a, **k):
    if "step_0000004" in str(f):  # die half-way through writing the second checkpoint
        real(obj, f, *a, **k)
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *a, **k)
torch.save = save
from sdcorr.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_during_checkpoint_write_keeps_the_last_good_one(
    image_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLER),
                           *_argv(image_dir, out, steps=6, every=2)], env=env,
                          capture_output=True, timeout=600)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert _names(out)[-1] == "step_0000002.pt"  # the half-written one is a temporary file
    assert any(n.startswith(".step_0000004") for n in _names(out))
    resume = ["-q", "pretrain", "--data", str(image_dir), "--out", str(out), "--resume"]
    assert main(resume) == 0
    assert _names(out) == ["step_0000002.pt", "step_0000004.pt", "step_0000006.pt"]
    assert _steps(out) == list(range(6))
