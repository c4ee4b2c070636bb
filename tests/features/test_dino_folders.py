"""Issue 19, problem 4: a broken ``--dino-model`` folder is one ``error:`` line naming the folder
and what is wrong (exit 2, nothing written, no traceback), whatever the breakage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sdcorr.cli import main
from sdcorr.errors import ModelLoadError
from sdcorr.hub import resolve_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"


class _CreatesAFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _break(folder: Path, kind: str, marker: Path) -> str:
    """Break the copied tiny DINOv2 ``folder`` in one way; return what the error must say."""
    config, weights = folder / "config.json", folder / "model.safetensors"
    if kind == "bert":
        data = json.loads(config.read_text())
        config.write_text(json.dumps({**data, "model_type": "bert", "architectures": ["Bert"]}))
        return "model_type 'bert'"
    if kind == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return "model.safetensors is damaged"
    if kind == "refused pickle":
        from safetensors.torch import load_file

        state = load_file(weights)
        weights.unlink()
        torch.save({**state, "x": _CreatesAFile(marker)}, folder / "pytorch_model.bin")
        return "weights_only=True) refused its pytorch_model.bin"
    if kind == "invalid json":
        config.write_text('{"model_type": "dinov2", ')
        return "config.json is not valid JSON"
    weights.unlink()  # no weights
    return "has no weights"


@pytest.mark.parametrize(
    "kind", ["bert", "truncated", "refused pickle", "invalid json", "no weights"]
)
def test_broken_dino_folder_is_one_line(kind: str, tiny_models, tmp_path: Path, capsys) -> None:
    folder, marker = tmp_path / "dino", tmp_path / "pwned"
    shutil.copytree(tiny_models["dino"], folder)
    says = _break(folder, kind, marker)
    out = tmp_path / "m.json"
    argv = ["-q", "match", str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "grace_hopper.jpg"),
            "--preset", "dino", "--dino-model", str(folder), "--device", "cpu",
            "--dino-frame", "56", "--json", str(out)]  # fmt: skip
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: model folder {folder}") and says in lines[0], lines[0]
    assert "cannot write" not in lines[0]
    assert not out.exists() and not marker.exists()
    assert list(tmp_path.iterdir()) == [folder]  # no temporary output left either
    if kind != "refused pickle":  # found by the folder check, before any model loads
        with pytest.raises(ModelLoadError, match="model folder"):
            resolve_model(str(folder), "dino")
