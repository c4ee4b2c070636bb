"""``benchmarks/spair.py``: --predictions scoring, errors, and torchrun sharding."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sdcorr.commands.eval import main
from sdcorr.eval.spair import load_spair

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "spair.py"


def spair_main(argv: list[str]) -> int:
    """``sdcorr eval --dataset spair ARGV`` (what ``benchmarks/spair.py ARGV`` runs)."""
    return main(argv, dataset="spair")


def _write_preds(path: Path, root: Path, noise: float = 0.0, drop: int = 0) -> Path:
    rng = np.random.default_rng(0)
    pairs = load_spair(root)[drop:]
    with open(path, "w") as f:
        for p in pairs:
            pred = p.trg_kps + noise * rng.standard_normal(p.trg_kps.shape)
            f.write(json.dumps({"pair": p.name, "pred_kps": pred.tolist()}) + "\n")
    return path


def test_predictions_of_the_truth_score_100(spair_root, tmp_path, capsys) -> None:
    preds = _write_preds(tmp_path / "truth.jsonl", spair_root)
    out = tmp_path / "out"
    argv = ["--root", str(spair_root), "--predictions", str(preds), "--out", str(out), "-q"]
    assert spair_main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["pck"]) == {"0.1", "0.05", "0.01"}
    for table in summary["pck"].values():
        assert table["per_keypoint"] == table["per_image"] == 100.0
        assert table["category_mean"] == {"per_keypoint": 100.0, "per_image": 100.0}
        assert len(table["per_category"]) == 6 and table["n_pairs"] == 6
        assert all(c["per_image"] == 100.0 for c in table["per_category"].values())
    assert summary["config"]["predictions"] == str(preds) and summary["config"]["pipeline"] is None
    assert len((out / "pairs.jsonl").read_text().splitlines()) == 6
    assert "| **all** | 6 | 100.00 | 100.00 | 100.00 |" in capsys.readouterr().out


def test_prediction_errors_exit_2(spair_root, tmp_path, capsys) -> None:
    main = spair_main
    base = ["--root", str(spair_root), "--out", str(tmp_path / "o"), "-q"]
    partial = _write_preds(tmp_path / "partial.jsonl", spair_root, drop=1)
    preds_ok = _write_preds(tmp_path / "ok.jsonl", spair_root)
    assert main([*base, "--predictions", str(partial)]) == 2
    assert "no prediction for 1 of 6 selected pairs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before the output folder is made
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"pair": load_spair(spair_root)[0].name, "pred_kps": [[1, 2]]}))
    assert main([*base, "--predictions", str(bad), "--categories", "aeroplane"]) == 2
    assert "1 predicted keypoints, expected 7" in capsys.readouterr().err
    assert main([*base, "--predictions", str(partial), "--root", str(tmp_path / "none")]) == 2
    assert "cvlab.postech.ac.kr" in capsys.readouterr().err
    assert main([*base, "--predictions", str(partial), "--alphas", "0.1", "10"]) == 2
    assert "--alphas must lie in (0, 1]" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    out_is_file = [*base[:2], "--out", str(tmp_path / "file"), "--predictions", str(preds_ok)]
    assert main(out_is_file) == 2
    assert "not a folder" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_spair(args: list[str], nproc: int = 1, timeout: int = 300, threads: int = 1) -> None:
    """Run the script in a subprocess (under torch.distributed.run when ``nproc > 1``)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
                "--master-addr=127.0.0.1", f"--master-port={_free_port()}"]  # fmt: skip
    proc = subprocess.run([*cmd, str(SCRIPT), *args, "-q"], env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(spair_root, tmp_path) -> None:
    preds = _write_preds(tmp_path / "noisy.jsonl", spair_root, noise=12.0)
    common = ["--root", str(spair_root), "--predictions", str(preds)]
    run_spair([*common, "--out", str(tmp_path / "one")])
    run_spair([*common, "--out", str(tmp_path / "two")], nproc=2)
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert one == two
    assert 0 < one["pck"]["0.1"]["per_keypoint"] < 100  # the noise makes some misses
    assert (tmp_path / "one" / "pairs.jsonl").read_text() == (
        tmp_path / "two" / "pairs.jsonl"
    ).read_text()
    assert not list((tmp_path / "two").glob("pairs.rank*"))  # shards merged away
    timing = json.loads((tmp_path / "two" / "timing.json").read_text())
    assert timing["world_size"] == 2 and timing["rank0"]["pairs"] == 3  # rank 1 did the rest
