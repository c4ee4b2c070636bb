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
    _fails(["match", A, B, "--out", out, "--preset", "nope"], tmp_path, capsys, "unknown preset")
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
