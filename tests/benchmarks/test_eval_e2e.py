"""``benchmarks/eval.py`` with the tiny random-weight models on every dataset fixture: a model
run completes and a killed run resumes to the same result (plumbing only: random weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .test_eval_script import ROOTS, eval_main
from .test_spair_e2e import FRAMES, _load_once  # noqa: F401 (module fixture: load models once)


def _args(dataset: str, models: dict, out: Path, *extra: str) -> list[str]:
    return ["--dataset", dataset, "--root", str(ROOTS[dataset]), "--out", str(out),
            "--sd-model", str(models["sd"]), "--dino-model", str(models["dino"]), *FRAMES,
            *extra, "-q"]  # fmt: skip


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(ROOTS))
def test_model_run_completes_and_resumes(dataset, tiny_models, tmp_path) -> None:
    main = eval_main
    out = tmp_path / "run"
    few = ["--limit", "2"] + (["--split", "PASCAL"] if dataset == "tss" else [])  # 2 pairs
    assert main(_args(dataset, tiny_models, out, *few)) == 0
    summary = _json(out / "summary.json")
    n = summary["pck"][next(iter(summary["pck"]))]["n_pairs"]
    assert n == len((out / "pairs.jsonl").read_text().splitlines()) > 1
    assert summary["config"]["dtype"] == "fp32" and summary["config"]["prompt"] == "empty"
    ev = summary["config"]["eval"]
    own = f"{ev['threshold']}-{ev['compare']}"
    assert summary["by_protocol"][own] == summary["pck"] and len(summary["by_protocol"]) >= 2
    # killed while writing the second pair: the rerun does only the missing pairs
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    lines = (resumed / "pairs.jsonl").read_text().splitlines(keepends=True)
    (resumed / "pairs.jsonl").write_text(lines[0] + lines[1][:20])
    (resumed / "summary.json").unlink()
    assert main(_args(dataset, tiny_models, resumed, *few)) == 0
    assert _json(resumed / "timing.json")["rank0"]["pairs"] == n - 1
    assert _json(resumed / "summary.json") == summary
    assert (resumed / "pairs.jsonl").read_text() == (out / "pairs.jsonl").read_text()
