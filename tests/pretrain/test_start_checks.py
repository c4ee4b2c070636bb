"""Issue 19: a run folder runs no code on ``--resume``, and a bad start fails at once with one
line, writes nothing and does not block the next start."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from sdcorr.cli import main
from sdcorr.errors import ConfigError
from sdcorr.pretrain import checkpoint as ckpt
from sdcorr.pretrain.config import get_preset, save_yaml
from sdcorr.pretrain.data import PretrainBatches


def _pretrain(data: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "pretrain", "--data", str(data), "--out", str(out), "--preset", "tiny",
            "--device", "cpu", *extra]  # fmt: skip


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


class _CreatesAFile:
    """Unpickling this calls ``open(path, "w")``: the file appears if the pickle is run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("fmt", ["torch.save", "raw pickle"])
def test_crafted_checkpoint_is_refused_and_runs_nothing(
    fmt: str, image_dir: Path, tmp_path: Path, capsys
) -> None:
    out, marker = tmp_path / "copied-run", tmp_path / "pwned"
    (out / ckpt.CKPT_DIR).mkdir(parents=True)
    save_yaml(get_preset("tiny"), out / "config.yaml")
    crafted = {"step": _CreatesAFile(marker), "student": {}}
    target = ckpt.checkpoint_path(out, 3)
    if fmt == "torch.save":
        torch.save(crafted, target)
    else:
        target.write_bytes(pickle.dumps(crafted))
    assert main(["-q", "pretrain", "--data", str(image_dir), "--out", str(out), "--resume"]) == 2
    err = _one_error_line(capsys)
    assert str(target.name) in err
    assert not marker.exists()  # the pickle never ran
    assert target.exists() and not (out / "backbone").exists()


def test_checkpoint_without_sdcorr_state_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / ckpt.CKPT_DIR).mkdir(parents=True)
    torch.save({"weights": torch.zeros(2)}, ckpt.checkpoint_path(out, 1))
    with pytest.raises(ConfigError, match="is not an sdcorr checkpoint"):
        ckpt.load_latest(out)


@pytest.mark.parametrize("steps", ["0", "-1"])
def test_steps_below_one_are_refused(steps: str, image_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(_pretrain(image_dir, out, "--steps", steps)) == 2
    assert "--steps" in _one_error_line(capsys) and not out.exists()
    yaml = tmp_path / "zero.yaml"
    yaml.write_text(f"run:\n  steps: {steps}\n")
    assert main(_pretrain(image_dir, out, "--config", str(yaml))) == 2
    assert "run.steps" in _one_error_line(capsys) and not out.exists()


@pytest.mark.parametrize("where", ["/proc", "a file"])
def test_out_that_cannot_be_created(where: str, image_dir: Path, tmp_path: Path, capsys) -> None:
    if where == "a file":
        (tmp_path / "f").write_text("not a folder")
        out = tmp_path / "f" / "run"
    else:
        out = Path("/proc/sdcorr-test-no-such-folder/run")
    assert main(_pretrain(image_dir, out, "--steps", "2")) == 2
    assert f"--out {out}: cannot create the folder" in _one_error_line(capsys)


def _bad_data(tmp_path: Path, kind: str) -> Path:
    data = tmp_path / f"data-{kind}"
    data.mkdir()
    if kind == "unreadable":
        (data / "a.jpg").write_bytes(b"not a jpeg")
        (data / "b.png").write_bytes(b"")
    return data


@pytest.mark.parametrize("out_exists", [False, True])
@pytest.mark.parametrize("kind", ["empty", "unreadable"])
def test_failed_start_leaves_nothing_and_the_next_start_runs(
    kind: str, out_exists: bool, image_dir: Path, tmp_path: Path, capsys
) -> None:
    out, data = tmp_path / "run", _bad_data(tmp_path, kind)
    if out_exists:
        out.mkdir()
    assert main(_pretrain(data, out, "--steps", "2")) == 2
    assert str(data) in _one_error_line(capsys)
    assert out.exists() == out_exists and not (out.exists() and any(out.iterdir()))
    assert main(_pretrain(image_dir, out, "--steps", "1")) == 0  # no --overwrite needed
    assert (out / "config.yaml").is_file() and (out / "backbone").is_dir()


def test_failure_before_the_first_checkpoint_removes_what_the_start_wrote(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    getitem = PretrainBatches.__getitem__

    def poisoned(self, step):
        batch = getitem(self, step)
        batch["global_crops"][0, 0, 0, 0] = float("nan")
        return batch

    monkeypatch.setattr(PretrainBatches, "__getitem__", poisoned)
    out = tmp_path / "run"
    assert main(_pretrain(image_dir, out, "--steps", "2")) == 2
    assert "non-finite loss" in _one_error_line(capsys)
    assert not out.exists()
    monkeypatch.setattr(PretrainBatches, "__getitem__", getitem)
    assert main(_pretrain(image_dir, out, "--steps", "1")) == 0


def test_init_with_a_refused_pickle_is_one_line(
    image_dir: Path, tiny_models, tmp_path: Path, capsys
) -> None:
    import shutil

    from safetensors.torch import load_file

    folder, marker = tmp_path / "init", tmp_path / "pwned"
    shutil.copytree(tiny_models["dino"], folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state, "x": _CreatesAFile(marker)}, folder / "pytorch_model.bin")
    out = tmp_path / "run"
    assert main(_pretrain(image_dir, out, "--steps", "1", "--init", str(folder))) == 2
    err = _one_error_line(capsys)
    assert f"model folder {folder}" in err and "refused its pytorch_model.bin" in err
    assert not marker.exists() and not out.exists()
