"""``sdcorr`` CLI end to end with tiny models, and its handling of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdcorr.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
A, B = str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "grace_hopper.jpg")
SMALL = ["--sd-frame", "256", "--sd-tile", "128", "--dino-frame", "224", "--device", "cpu"]


def _models(tiny_models) -> list[str]:
    return ["--dino-model", str(tiny_models["dino"]), "--sd-model", str(tiny_models["sd"])]


def test_identical_images_map_every_grid_point_to_itself(tiny_models, tmp_path) -> None:
    out = tmp_path / "swap.gif"
    rc = main(
        ["-q", "match", A, A, "--out", str(out), "--json", str(tmp_path / "m.json"),
         "--plot", str(tmp_path / "plot.png"), "--category", "person", "--dense-grid", "0",
         *SMALL, *_models(tiny_models)]
    )  # fmt: skip
    assert rc == 0
    data = json.loads((tmp_path / "m.json").read_text())
    assert {"points_a", "points_b", "scores", "config", "size_a", "size_b", "category"} <= set(data)
    assert (
        data["points_a"] == data["points_b"] and len(data["points_a"]) == 16
    )  # 16x16 grid, step 4
    assert data["config"]["name"] == "sd-dino" and data["config"]["sd"]["frame"] == 256
    gif = Image.open(out)
    assert gif.size == (320 + 32 + 320, 320)  # A | gap | B, panels at --max-side 320
    total = 0
    for i in range(gif.n_frames):  # identical consecutive frames are merged, time is kept
        gif.seek(i)
        total += gif.info["duration"]
    assert total == 60 * 30  # 30 motion frames + 30 hold frames at 30 fps (30 ms each)
    assert Image.open(tmp_path / "plot.png").size[0] > 512
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "plot.png", "swap.gif"]


def test_points_file_png_output_and_default_frames(tiny_models, tmp_path) -> None:
    pts = tmp_path / "pts.json"
    pts.write_text(json.dumps([[100, 120], [300.5, 400], [511, 0]]))
    rc = main(
        ["-q", "match", A, B, "--points", str(pts), "--out", str(tmp_path / "swap.png"),
         "--json", str(tmp_path / "m.json"), "--device", "cpu", *_models(tiny_models)]
    )  # fmt: skip
    assert rc == 0
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["points_a"] == [[100, 120], [300.5, 400], [511, 0]]
    pb = np.array(data["points_b"])
    assert pb.shape == (3, 2) and (pb[:, 0] <= 511).all() and (pb[:, 1] <= 599).all()
    assert data["config"]["sd"]["frame"] == 960 and data["config"]["dino"]["frame"] == 840
    assert Image.open(tmp_path / "swap.png").size == (512, 600)


def _fails(args: list[str], tmp_path: Path, capsys, match: str) -> None:
    before = set(tmp_path.iterdir())
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and match in errors[0] and "Traceback" not in err, err
    assert set(tmp_path.iterdir()) == before  # nothing partial left behind


def test_bad_input_exits_2_with_one_line(tmp_path, capsys) -> None:
    out = str(tmp_path / "o.gif")
    _fails(["match", A, str(tmp_path / "nope.jpg"), "--out", out], tmp_path, capsys, "not found")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    _fails(["match", str(junk), B, "--out", out], tmp_path, capsys, "not a readable image")
    bad = tmp_path / "bad.json"
    bad.write_text("[[1, 2], [3")
    _fails(["match", A, B, "--points", str(bad), "--out", out], tmp_path, capsys, "not valid JSON")
    bad.write_text(json.dumps([[10, 10], [600, 10]]))
    _fails(
        ["match", A, B, "--points", str(bad), "--out", out], tmp_path, capsys, "outside the 512x512"
    )
    bad.write_text(json.dumps({"points": [1, 2, 3]}))
    _fails(["match", A, B, "--points", str(bad), "--out", out], tmp_path, capsys, "[x, y] pairs")
    missing_dir = str(tmp_path / "no" / "such" / "dir" / "o.gif")
    _fails(["match", A, B, "--out", missing_dir], tmp_path, capsys, "does not exist")
    _fails(["match", A, B, "--out", str(tmp_path / "o.mp4")], tmp_path, capsys, ".gif or .png")
    _fails(["match", A, B], tmp_path, capsys, "nothing to write")
    _fails(["match", A, B, "--out", out, "--preset", "nope"], tmp_path, capsys, "invalid choice")
    _fails(["match", A, B, "--out", out, "--dino-model", str(tmp_path / "none")], tmp_path, capsys,
           "model folder not found")  # fmt: skip
    mask = tmp_path / "m.png"
    Image.new("L", (10, 10), 255).save(mask)
    before = set(tmp_path.iterdir())
    assert main(["match", A, B, "--out", out, "--mask-b", str(mask)]) == 2
    assert "mask" in capsys.readouterr().err and set(tmp_path.iterdir()) == before


def test_offline_default_models_give_the_clear_error(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    from sdcorr import hub

    monkeypatch.setattr(hub, "cache_dir", lambda: tmp_path / "cache")
    _fails(["match", A, B, "--out", str(tmp_path / "s.gif"), "--device", "cpu"], tmp_path, capsys,
           "sdcorr download")  # fmt: skip


def test_help_and_usage_errors(capsys) -> None:
    assert main(["--help"]) == 0
    assert "match" in capsys.readouterr().out
    assert main(["match"]) == 2


@pytest.mark.parametrize("preset", ["dino"])
def test_extract_writes_safetensors(tiny_models, tmp_path, preset) -> None:
    from safetensors import safe_open

    rc = main(["-q", "extract", A, "--out", str(tmp_path / "f"), "--preset", preset,
               "--dino-frame", "224", "--device", "cpu", *_models(tiny_models)])  # fmt: skip
    assert rc == 0
    with safe_open(str(tmp_path / "f" / "astronaut.safetensors"), "pt") as f:
        assert list(f.keys()) == ["dino"] and tuple(f.get_tensor("dino").shape) == (32, 16, 16)
        assert json.loads(f.metadata()["config"])["name"] == "dino"


# ---------------------------------------------------------------------------- issue 13
@pytest.fixture
def no_models(monkeypatch):
    """Loading a model fails the test: checks must all run before."""
    from sdcorr.pipeline import SDDino

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(SDDino, "from_pretrained", boom)


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--fps", "0"], "--fps"),
        (["--fps", "nan"], "--fps"),
        (["--max-side", "0"], "--max-side"),
        (["--grid-step", "0"], "--grid-step"),
        (["--dense-grid", "-5"], "--dense-grid"),
        (["--sd-frame", "100"], "--sd-frame"),
        (["--sd-tile", "100"], "--sd-tile"),
        (["--dino-frame", "100"], "--dino-frame"),
        (["--sd-frame", "128", "--sd-tile", "256"], "--sd-tile"),
        (["--plot", "SAME"], "same file"),
    ],
)
def test_bad_options_are_refused_before_any_model_loads(
    extra, option, tmp_path, capsys, no_models
) -> None:
    out = str(tmp_path / "s.gif")
    extra = [out if e == "SAME" else e for e in extra]
    _fails(["match", A, B, "--out", out, "--device", "cpu", *extra], tmp_path, capsys, option)


def test_half_precision_on_a_cpu_without_its_kernels_is_one_line(tmp_path, capsys, no_models,
                                                               monkeypatch) -> None:  # fmt: skip
    """``--dtype bf16``/``fp16`` on a CPU where oneDNN has no kernels for it (this CI machine:
    AVX2 only) stops before any model loads; the check itself is tested in test_optimisations."""
    from sdcorr import device

    monkeypatch.setattr(device, "native_dtype", lambda dt, dev: dt == device.torch.float32)
    for dtype in ("bf16", "fp16"):
        out = str(tmp_path / "s.gif")
        _fails(["match", A, B, "--out", out, "--device", "cpu", "--dtype", dtype], tmp_path,
               capsys, "no native kernels")  # fmt: skip


def test_points_naming_a_folder_and_a_decompression_bomb(tmp_path, capsys, no_models,
                                                         monkeypatch) -> None:  # fmt: skip
    out = str(tmp_path / "s.gif")
    (tmp_path / "pts").mkdir()
    _fails(["match", A, B, "--out", out, "--points", str(tmp_path / "pts")], tmp_path, capsys,
           "folder")  # fmt: skip
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # 512x512 > 2x the limit
    _fails(["match", A, B, "--out", out], tmp_path, capsys, "too large")


def test_image_too_thin_for_one_feature_cell_is_refused(tmp_path, capsys, no_models) -> None:
    thin = tmp_path / "thin.png"
    Image.new("RGB", (2000, 20), (90, 40, 10)).save(thin)  # 20 px -> 8 px in the 840 frame
    _fails(["match", str(thin), B, "--out", str(tmp_path / "s.gif")], tmp_path, capsys,
           "less than one 14-px feature cell")  # fmt: skip


DINO = ["--preset", "dino", "--dino-frame", "224", "--dense-grid", "0", "--device", "cpu"]


def test_write_failure_at_the_end_is_one_error_line_and_leaves_nothing(
    tiny_models, tmp_path, capsys, monkeypatch
) -> None:
    import errno

    from sdcorr import io

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "write_json", disk_full)
    _fails(["-q", "match", A, B, "--out", str(tmp_path / "s.gif"), "--json",
            str(tmp_path / "m.json"), *DINO, "--dino-model", str(tiny_models["dino"])],
           tmp_path, capsys, "No space left on device")  # fmt: skip


def test_interrupt_between_two_outputs_keeps_the_old_ones(tiny_models, tmp_path, capsys,
                                                          monkeypatch) -> None:  # fmt: skip
    from sdcorr import viz

    (tmp_path / "m.json").write_text("old")
    (tmp_path / "s.gif").write_bytes(b"old gif")

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(viz, "plot_matches", ctrl_c)  # after the GIF, before the JSON
    rc = main(["-q", "match", A, B, "--out", str(tmp_path / "s.gif"), "--plot",
               str(tmp_path / "p.png"), "--json", str(tmp_path / "m.json"), *DINO,
               "--dino-model", str(tiny_models["dino"])])  # fmt: skip
    assert rc == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "s.gif"]
    assert (tmp_path / "m.json").read_text() == "old"
    assert (tmp_path / "s.gif").read_bytes() == b"old gif"


@pytest.mark.parametrize("argv", [["-q", "match", A, B], ["match", A, B, "-q"],
                                  ["match", "-v", A, B, "--quiet"]])  # fmt: skip
def test_quiet_and_verbose_work_before_or_after_the_subcommand(argv) -> None:
    from sdcorr.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.command == "match"
    assert build_parser().parse_args(["match", A, B]).quiet is False


def test_version_and_help_shows_defaults_and_preset_choices(capsys) -> None:
    import sdcorr

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sdcorr {sdcorr.__version__}"
    assert main(["match", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in ("{sd-dino,dino,sd,geoaware,cleandift,dinov3,sd-dinov3}", "(default: 320)", "(default: 156)",
                 "(default: 30.0)", "(default: auto)"):  # fmt: skip
        assert part in text, part


def test_log_lines_do_not_break_the_progress_bar(capsys) -> None:
    import logging
    import sys

    from tqdm import tqdm

    from sdcorr.cli import cli_logging

    with cli_logging(quiet=False, verbose=False):
        bar = tqdm(total=3, file=sys.stderr, disable=False, desc="work", mininterval=0)
        bar.update()
        logging.getLogger("sdcorr").info("LOGLINE")
        bar.update()
        bar.close()
    err = capsys.readouterr().err
    before = err.split("LOGLINE")[0]
    assert before.endswith(("\r", "\n")), repr(before[-40:])  # the bar was cleared first
    after = err.split("LOGLINE")[1]
    assert after.startswith("\n") and "work" in after  # the bar is redrawn below the line
    assert logging.getLogger("sdcorr").propagate  # restored after the run


def test_quiet_switches_off_the_libraries_loading_bars() -> None:
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as tf_logging

    from sdcorr.cli import third_party_bars

    assert tf_logging.is_progress_bar_enabled()
    with third_party_bars(quiet=True):
        assert hub_utils.are_progress_bars_disabled()
        assert not tf_logging.is_progress_bar_enabled()
    assert tf_logging.is_progress_bar_enabled() and not hub_utils.are_progress_bars_disabled()


def test_quiet_run_prints_nothing_but_the_written_files(tiny_models, tmp_path, capsys) -> None:
    rc = main(["-q", "match", A, B, "--json", str(tmp_path / "m.json"), *DINO,
               "--dino-model", str(tiny_models["dino"])])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0 and cap.out.strip() == f"json\t{tmp_path / 'm.json'}"
    assert "Loading" not in cap.err and "%|" not in cap.err, cap.err


def test_extract_gives_same_stems_distinct_files_with_category_and_prompt(
    tiny_models, tmp_path, capsys
) -> None:
    from safetensors import safe_open

    (tmp_path / "dir").mkdir()
    Image.open(A).save(tmp_path / "a.jpg")
    Image.open(B).save(tmp_path / "dir" / "a.jpg")
    out = tmp_path / "f"
    rc = main(["-q", "extract", str(tmp_path / "a.jpg"), str(tmp_path / "dir" / "a.jpg"),
               "--out", str(out), "--category", "person", "--sd-frame", "128", "--sd-tile", "0",
               "--dino-frame", "112", "--device", "cpu", *_models(tiny_models)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.safetensors", "dir__a.safetensors"]
    with safe_open(str(out / "dir__a.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["image"] == str(tmp_path / "dir" / "a.jpg")
    assert json.loads(meta["category"]) == "person"
    assert json.loads(meta["prompt"]) == "a photo of a person"


def test_extract_names_and_interrupt_leave_all_or_nothing(tiny_models, tmp_path, monkeypatch,
                                                          capsys) -> None:  # fmt: skip
    from sdcorr.commands.extract import output_names
    from sdcorr.pipeline import SDDino

    assert output_names(["x/a.jpg", "x/b/a.jpg", "x/c.jpg"]) == ["a", "b__a", "c"]
    assert output_names(["a.jpg", "a.png"]) == ["a.jpg", "a.png"]
    calls = []
    real = SDDino.extract

    def second_fails(self, images, category=None):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, images, category)

    monkeypatch.setattr(SDDino, "extract", second_fails)
    out = tmp_path / "f"
    rc = main(["-q", "extract", A, B, "--out", str(out), "--preset", "dino", "--dino-frame", "112",
               "--device", "cpu", *_models(tiny_models)])  # fmt: skip
    assert rc == 130 and len(calls) == 2
    assert not out.exists()  # the first image's file was not left alone, nor the empty folder


def test_pretrain_without_its_extra_says_so_in_one_line(tmp_path, capsys, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "kornia" else real(name, *a))  # fmt: skip
    _fails(["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "run")], tmp_path, capsys,
           "needs kornia: pip install 'sdcorr[pretrain]'")  # fmt: skip


def test_default_grid_falls_back_to_every_cell_on_a_thin_image(caplog) -> None:
    """A 1000x30 image fits one 14-px cell row pair at 840, none on the every-4th-cell grid."""
    import torch

    from sdcorr.commands.pair_steps import grid_points as _grid_points
    from sdcorr.image import Geometry
    from sdcorr.types import FeatureMap

    geo = Geometry(1000, 30, 840, 14)
    assert len(geo.grid_points(4)) == 0  # what used to give zero matches without a word
    fa = FeatureMap(torch.zeros(1, 4, 60, 60), (geo,))
    with caplog.at_level("WARNING", logger="sdcorr"):
        pts = _grid_points(fa, 4)
    assert len(pts) == 2 * 60 and "using every cell" in caplog.text
