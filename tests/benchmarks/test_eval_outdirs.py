"""``sdcorr eval`` / ``benchmarks/eval.py`` output folders that cannot be created (issue 19,
problem 5): ``--out`` or ``--cache-dir`` under ``/proc``, a folder that refuses writes or a
file is one ``error:`` line naming the option (exit 2), before any model loads, leaving no
empty ``--out``; a run that fails before it wrote anything (a missing model) removes the
folders it created."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPAIR = REPO / "tests" / "data" / "spair-mini" / "SPair-71k"
# /proc: no folder can be made there; /sys: a read-only file system (root cannot write either)
WHERE = ["/proc", "/sys", "a file"]


def main(argv: list[str]) -> int:
    """``benchmarks/eval.py ARGV`` (the script's ``main``, ``sdcorr eval``'s) in this process."""
    spec = importlib.util.spec_from_file_location("eval_launcher", REPO / "benchmarks" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _bad_folder(where: str, tmp_path: Path) -> Path:
    if where == "a file":
        (tmp_path / "f").write_text("not a folder")
        return tmp_path / "f" / "sub"
    return Path(where) / "sdcorr-test-no-such-folder" / "sub"


def _argv(tiny_models, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "spair", "--root", str(SPAIR), "--out", str(out), "--preset", "dino",
            "--dino-model", str(tiny_models["dino"]), "--device", "cpu", *extra]  # fmt: skip


def _one_error(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    from sdcorr.pipeline import SDDino

    monkeypatch.setattr(SDDino, "from_pretrained", lambda *a, **k: pytest.fail("model loaded"))


@pytest.mark.parametrize("where", WHERE)
def test_out_that_cannot_be_created(where, tiny_models, tmp_path, capsys, no_models) -> None:
    out = _bad_folder(where, tmp_path)
    assert main(_argv(tiny_models, out)) == 2
    err = _one_error(capsys.readouterr().err)
    assert err.startswith(f"error: --out {out}: cannot create the folder")


@pytest.mark.parametrize("where", WHERE)
def test_cache_dir_that_cannot_be_created_leaves_no_out(
    where, tiny_models, tmp_path, capsys, no_models
) -> None:
    cache, out = _bad_folder(where, tmp_path), tmp_path / "runs" / "o"
    assert main(_argv(tiny_models, out, "--cache-dir", str(cache))) == 2
    err = _one_error(capsys.readouterr().err)
    assert err.startswith(f"error: --cache-dir {cache}: cannot create the folder")
    assert not (tmp_path / "runs").exists()


def test_a_missing_model_leaves_no_folders(tmp_path, capsys, monkeypatch) -> None:
    """Offline with an empty cache: the missing model is named before any model loads (the
    loader locates every model first), and the --out and --cache-dir this run created are gone
    again."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    out, cache = tmp_path / "runs" / "o", tmp_path / "cache"
    argv = ["--dataset", "spair", "--root", str(SPAIR), "--out", str(out), "--preset", "dino",
            "--cache-dir", str(cache)]  # fmt: skip
    assert main(argv) == 2
    err = _one_error(capsys.readouterr().err)
    assert "'facebook/dinov2-base'" in err and "sdcorr download --preset dino" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_earlier_runs_folder_stays(tiny_models, tmp_path, capsys, no_models) -> None:
    """A folder the run did not create is never removed (here: it holds another config)."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "config.json").write_text('{"eval": {"dataset": "other"}}')
    assert main(_argv(tiny_models, out)) == 2
    assert "holds results of another configuration" in _one_error(capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


@pytest.mark.parametrize("option", ["--out", "--cache-dir"])
def test_launcher_under_proc_is_one_line(option, tiny_models, tmp_path) -> None:
    """``benchmarks/eval.py`` as a script (a subprocess), each option under /proc."""
    bad = Path("/proc/sdcorr-test-no-such-folder/sub")
    out = bad if option == "--out" else tmp_path / "o"
    extra = ["--cache-dir", str(bad)] if option == "--cache-dir" else []
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    script = REPO / "benchmarks" / "eval.py"
    proc = subprocess.run([sys.executable, str(script), *_argv(tiny_models, out, *extra)],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    err = _one_error(proc.stderr)
    assert err.startswith(f"error: {option} {bad}: cannot create the folder")
    assert not (tmp_path / "o").exists()
