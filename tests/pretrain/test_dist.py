"""Multi-process runs on CPU with gloo through ``torchrun -m sdcorr.cli pretrain``."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(image_dir: Path, out: Path, *extra: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--nnodes", "1", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "sdcorr.cli", "-q", "pretrain", "--data", str(image_dir), "--out", str(out),
           "--preset", "tiny", "--device", "cpu", *extra]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ddp_students_identical_across_ranks(image_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "sk.yaml"  # also exercises Sinkhorn-Knopp all-reduces and a separate head
    cfg.write_text("loss:\n  centering: sinkhorn_knopp\nmodel:\n  ibot_separate_head: true\n")
    out = tmp_path / "ddp"
    _torchrun(image_dir, out, "--steps", "6", "--config", str(cfg), "--dump-rank-states")
    r0 = torch.load(out / "ranks" / "rank0.pt", weights_only=False)
    r1 = torch.load(out / "ranks" / "rank1.pt", weights_only=False)
    assert r0["student"].keys() == r1["student"].keys()
    for key in ("student", "teacher"):
        for name, value in r0[key].items():
            assert torch.equal(value, r1[key][name]), (key, name)
    assert r0["last"]["loss"] != r1["last"]["loss"]  # ranks saw different images
    assert "ibot_head.mlp.0.weight" in r0["student"]
    from transformers import Dinov2Model

    Dinov2Model.from_pretrained(out / "backbone")


@pytest.mark.slow
def test_fsdp2_run(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fsdp2"
    _torchrun(image_dir, out, "--steps", "3", "--parallel", "fsdp2")
    import json

    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(math.isfinite(r["loss"]) for r in log)
    from transformers import Dinov2Model

    ckpt = torch.load(out / "checkpoints" / "step_0000003.pt", weights_only=False)
    model = Dinov2Model.from_pretrained(out / "backbone")
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["teacher"][f"backbone.{k}"]), k
