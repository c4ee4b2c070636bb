"""One options resolver: every command's model and match flags mean the same, checked the same way
before any model loads, and a preset's own settings hold unless a flag changes them."""

from __future__ import annotations

import dataclasses

import pytest

from sdcorr import device
from sdcorr.cli import build_parser, main
from sdcorr.commands.options import resolve_args
from sdcorr.config import get_preset
from sdcorr.errors import ConfigError
from sdcorr.options import ModelOptions, RunOptions, apply, resolve

# the positional arguments and required options each command needs besides the model flags
COMMANDS = {
    "match": ["match", "a.jpg", "b.jpg"],
    "extract": ["extract", "a.jpg", "--out", "o"],
    "demo": ["demo"],
    "eval": ["eval", "--dataset", "spair", "--root", "r", "--out", "o"],
}
MODEL_FLAGS = [
    [],
    ["--preset", "geoaware", "--sd-frame", "256", "--sd-tile", "0", "--dino-frame", "224"],
    ["--preset", "cleandift", "--unet-weights", "org/unet:w.safetensors", "--dtype", "bf16"],
    ["--no-noise", "--sd-model", "sd-folder", "--dino-model", "dino-folder", "--sd-tile", "128",
     "--sd-frame", "128"],
]  # fmt: skip
MATCH_FLAGS = [
    [],
    ["--preset", "geoaware", "--no-soft-argmax"],
    ["--preset", "dino", "--flip-align", "--soft-argmax", "--mutual"],
    ["--preset", "cleandift", "--no-flip-align"],
]


@pytest.fixture(autouse=True)
def _every_dtype_native(monkeypatch) -> None:
    """bf16 on a CPU without its kernels is refused (tests/test_optimisations.py); these tests
    check how flags resolve, whatever this machine's CPU has."""
    monkeypatch.setattr(device, "native_dtype", lambda dt, dev: True)


def _resolve(command: str, flags: list[str]):
    return resolve_args(build_parser().parse_args([*COMMANDS[command], *flags]))


@pytest.mark.parametrize("flags", MODEL_FLAGS)
def test_model_flags_resolve_to_the_same_config_in_every_command(flags) -> None:
    match = _resolve("match", flags)
    for command in ("extract", "demo", "eval"):
        got = _resolve(command, flags)
        assert got.config == match.config, command
        assert got.dtype == match.dtype or command == "eval"  # eval's default dtype is fp32


@pytest.mark.parametrize("flags", MATCH_FLAGS)
def test_match_flags_resolve_to_the_same_config_in_match_demo_and_eval(flags) -> None:
    want = _resolve("match", flags).config
    assert _resolve("demo", flags).config == want
    assert _resolve("eval", flags).config == want


def test_the_sd_noise_seed_is_sd_seed_in_eval_where_seed_samples_pairs() -> None:
    assert _resolve("match", ["--seed", "7"]).config == _resolve("eval", ["--sd-seed", "7"]).config
    args = build_parser().parse_args([*COMMANDS["eval"], "--seed", "3", "--sd-seed", "7"])
    assert args.seed == 3 and resolve_args(args).config.sd.seed == 7


def test_a_presets_own_settings_hold_unless_a_flag_changes_them() -> None:
    geo = get_preset("geoaware")
    assert _resolve("demo", ["--preset", "geoaware"]).config == geo
    off = _resolve("demo", ["--preset", "geoaware", "--no-soft-argmax"]).config
    assert not off.match.soft_argmax and off.match.flip_align
    assert off == dataclasses.replace(geo, match=dataclasses.replace(geo.match, soft_argmax=False))
    on = _resolve("match", ["--preset", "dino", "--flip-align"]).config.match
    assert on.flip_align and not on.soft_argmax
    # the docstring's example
    r = resolve(ModelOptions(preset="geoaware", soft_argmax=False, sd_tile=0))
    assert (r.config.match.soft_argmax, r.config.match.flip_align, r.config.sd.tile_size) == (
        False, True, None,
    )  # fmt: skip


def test_options_that_do_not_apply_to_a_preset_leave_it_as_it_is() -> None:
    dino = get_preset("dino")
    assert apply(dino, ModelOptions(sd_frame=256, seed=1, noise=False)) == dino


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (ModelOptions(sd_frame=100), "--sd-frame must be a positive multiple of 64, got 100"),
        (ModelOptions(sd_frame=0), "--sd-frame must be a positive multiple of 64"),
        (ModelOptions(sd_tile=-64), "--sd-tile must be 0 (no tiles) or a positive multiple"),
        (ModelOptions(sd_tile=100), "--sd-tile must be 0 (no tiles) or a positive multiple"),
        (ModelOptions(dino_frame=100), "--dino-frame must be positive and a multiple of"),
        (ModelOptions(dino_frame=0), "--dino-frame must be positive"),
        (ModelOptions(sd_frame=128, sd_tile=256), "--sd-tile 256 is larger than the SD frame 128"),
        (ModelOptions(preset="nope"), "unknown preset 'nope'"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_option(opts, message) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(opts)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dino_frames_of_either_patch_are_accepted() -> None:
    assert resolve(ModelOptions(preset="dino", dino_frame=224)).config.dino.frame == 224
    assert resolve(ModelOptions(preset="dinov3", dino_frame=160)).config.dino.frame == 160


def test_bad_device_dtype_and_attention_are_refused() -> None:
    for run, message in ((RunOptions(device="tpu9"), "unknown device"),
                         (RunOptions(dtype="fp8"), "unknown dtype"),
                         (RunOptions(attention="flash"), "--attention")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            resolve(ModelOptions(), run)


@pytest.mark.parametrize("command", ["match", "extract", "demo", "eval"])
def test_every_command_refuses_a_bad_frame_before_any_model_loads(
    command, tmp_path, capsys, monkeypatch
) -> None:
    from sdcorr.pipeline import SDDino

    monkeypatch.setattr(SDDino, "from_pretrained", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.chdir(tmp_path)
    a, b = _two_images(tmp_path)
    extra = {"match": ["--json", "m.json"], "demo": [], "eval": [], "extract": []}[command]
    argv = [*COMMANDS[command], *extra, "--dino-frame", "100"]
    if command == "match":
        argv[1:3] = [str(a), str(b)]
    if command == "extract":
        argv[1] = str(a)
    if command == "demo":
        pytest.importorskip("gradio", reason="sdcorr demo needs the sdcorr[demo] extra")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --dino-frame must be positive") and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no o/, no m.json


def _two_images(folder):
    from PIL import Image

    paths = [folder / "a.png", folder / "b.png"]
    for p in paths:
        Image.new("RGB", (64, 48), (120, 30, 60)).save(p)
    return paths
