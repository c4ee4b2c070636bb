"""``--unet-weights`` (issue 19, problem 8): the file or ``repo:file`` is checked before any
model loads in every command that takes it (match, match --pairs, extract, demo, eval), a
preset without Stable Diffusion refuses it, and no other branch option is ignored in silence."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sdcorr.cli import main
from sdcorr.errors import SdcorrError

REPO = Path(__file__).resolve().parents[1]
SPAIR = REPO / "tests" / "data" / "spair-mini" / "SPair-71k"


COMMANDS = ["match", "pairs", "extract", "demo", "eval"]  # pairs: sdcorr match --pairs


def launcher_main(argv: list[str]) -> int:
    """``benchmarks/eval.py ARGV`` (the script's ``main``) in this process."""
    spec = importlib.util.spec_from_file_location("eval_launcher", REPO / "benchmarks" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


class _RunsCode:
    """Unpickling this would create the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (str(self.path),))


def _weights(tmp_path: Path, kind: str) -> tuple[str, str]:
    """``(--unet-weights value, the error it must give)`` of each kind of bad weights."""
    if kind == "missing":
        return str(tmp_path / "nope.safetensors"), "no such file, and not a hub repo:filename"
    if kind == "folder":
        (tmp_path / "w").mkdir()
        return str(tmp_path / "w"), "not a file"
    if kind == "not-weights":
        (tmp_path / "w.bin").write_bytes(b"hello, not a tensor file")
        return str(tmp_path / "w.bin"), "neither a safetensors file nor a torch.save state dict"
    if kind == "truncated":
        from safetensors.torch import save_file

        save_file({"conv_in.weight": torch.zeros(64, 64)}, str(tmp_path / "w.safetensors"))
        data = (tmp_path / "w.safetensors").read_bytes()
        (tmp_path / "w.safetensors").write_bytes(data[: len(data) // 2])
        return str(tmp_path / "w.safetensors"), "neither a safetensors file nor a torch.save"
    if kind == "pickle":
        torch.save({"conv_in.weight": _RunsCode(tmp_path / "pwned")}, tmp_path / "w.bin")
        return str(tmp_path / "w.bin"), "refused: it refers to Python objects"
    assert kind == "syntax"
    return "CompVis/cleandift", "no such file, and not a hub repo:filename"


def _argv(command: str, tmp_path: Path, flags: list[str]) -> list[str]:
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (64, 48), (120, 30, 60)).save(img)
    (tmp_path / "pairs.txt").write_text("a.png a.png\n")
    return {
        "match": ["match", str(img), str(img), "--json", str(tmp_path / "m.json")],
        "pairs": [
            "match",
            "--pairs",
            str(tmp_path / "pairs.txt"),
            "--out-dir",
            str(tmp_path / "o"),
        ],
        "extract": ["extract", str(img), "--out", str(tmp_path / "o")],
        "demo": ["demo"],
        "eval": ["--dataset", "spair", "--root", str(SPAIR), "--out", str(tmp_path / "o")],
    }[command] + flags


def _fails_before_models(argv: list[str], capsys, monkeypatch) -> str:
    """Run ``sdcorr ARGV`` (``benchmarks/eval.py`` for eval); check it is refused in one line
    before any model loads."""
    from sdcorr.pipeline import SDDino

    monkeypatch.setattr(SDDino, "from_pretrained", lambda *a, **k: pytest.fail("model loaded"))
    if argv[0] == "demo":
        pytest.importorskip("gradio", reason="sdcorr demo needs the sdcorr[demo] extra")
    assert (launcher_main(argv) if argv[0] == "--dataset" else main(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", ["missing", "folder", "not-weights", "truncated", "pickle",
                                  "syntax"])  # fmt: skip
def test_bad_unet_weights_are_refused_before_any_model_loads(
    command, kind, tmp_path, capsys, monkeypatch
) -> None:
    spec, message = _weights(tmp_path, kind)
    argv = _argv(command, tmp_path, ["--preset", "sd", "--unet-weights", spec])
    err = _fails_before_models(argv, capsys, monkeypatch)
    assert err.startswith(f"error: --unet-weights {spec}") and message in err, err
    assert not (tmp_path / "pwned").exists()  # the pickle was scanned, never run
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flags", [["--unet-weights", "CompVis/cleandift:w.safetensors"],
                                   ["--no-noise"]])  # fmt: skip
def test_a_preset_without_sd_refuses_unet_weights_and_no_noise(
    command, flags, tmp_path, capsys, monkeypatch
) -> None:
    """``--preset dino --unet-weights FILE`` would run without the weights: refused, one line."""
    argv = _argv(command, tmp_path, ["--preset", "dino", *flags])
    err = _fails_before_models(argv, capsys, monkeypatch)
    assert f"error: {flags[0]}: preset 'dino' has no Stable Diffusion branch" in err
    assert "sd-dino" in err and "cleandift" in err  # the presets it would apply to


def test_other_options_of_a_missing_branch_draw_a_warning(caplog) -> None:
    from sdcorr.options import ModelOptions, resolve

    with caplog.at_level("WARNING", logger="sdcorr"):
        cfg = resolve(ModelOptions(preset="dino", sd_frame=256, sd_model="x")).config
        resolve(ModelOptions(preset="sd", dino_frame=224))
    assert cfg.sd is None
    assert [r.getMessage() for r in caplog.records] == [
        "warning: --sd-model is not used: preset 'dino' has no Stable Diffusion branch",
        "warning: --sd-frame is not used: preset 'dino' has no Stable Diffusion branch",
        "warning: --dino-frame is not used: preset 'sd' has no DINO branch",
    ]


def test_the_demos_preset_switch_keeps_only_the_options_that_apply(caplog) -> None:
    """Switching the page to ``dino`` leaves the SD options out (no error, no warning), and
    keeps them for a preset with SD."""
    from sdcorr.options import ModelOptions, for_preset, resolve

    opts = ModelOptions(preset="cleandift", unet_weights="o/r:w.safetensors", noise=False,
                        sd_frame=512, dino_frame=224)  # fmt: skip
    with caplog.at_level("WARNING", logger="sdcorr"):
        dino = resolve(for_preset(opts, "dino")).config
    assert dino.sd is None and dino.dino.frame == 224 and caplog.records == []
    sd = resolve(for_preset(opts, "sd-dino")).config
    assert (sd.sd.unet_weights, sd.sd.noise, sd.sd.frame) == ("o/r:w.safetensors", False, 512)
    with pytest.raises(SdcorrError, match="--unet-weights and --no-noise: preset 'dino'"):
        resolve(replace(opts, preset="dino"))


def test_good_weights_pass_the_checks(tmp_path) -> None:
    """A safetensors file and a plain torch.save state dict pass (a check that refuses
    everything would pass the tests above)."""
    from safetensors.torch import save_file

    from sdcorr.options import ModelOptions, resolve

    save_file({"w": torch.zeros(3)}, str(tmp_path / "a.safetensors"))
    torch.save({"w": torch.zeros(3)}, tmp_path / "b.bin")
    for name in ("a.safetensors", "b.bin"):
        spec = str(tmp_path / name)
        assert resolve(ModelOptions(preset="sd", unet_weights=spec)).config.sd.unet_weights == spec
