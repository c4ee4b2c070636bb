"""DemoSession (no Gradio): endpoint equals ``sdcorr match --points``, features cached, pictures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from sdcorr import viz
from sdcorr.cli import build_parser, main
from sdcorr.commands.common import load_pipeline
from sdcorr.demo.session import DemoSession
from sdcorr.match.sparse import point_similarity

DOG = (
    Path(__file__).resolve().parents[1] / "data" / "spair-mini" / "SPair-71k" / "JPEGImages" / "dog"
)
A, B = DOG / "2009_001225.jpg", DOG / "2011_002398.jpg"
POINTS = [[50.0, 60.0], [120.0, 200.0], [300.0, 100.0]]


def tiny_options(tiny_models) -> list[str]:
    """Model options of a fast tiny ``dino`` pipeline (as ``sdcorr match``/``demo`` take them)."""
    return ["--preset", "dino", "--dino-model", str(tiny_models["dino"]), "--device", "cpu",
            "--dino-frame", "224"]  # fmt: skip


def cli_points(options: list[str], points: list, tmp_path: Path) -> dict:
    """``sdcorr match A B --points`` → its JSON."""
    (tmp_path / "pts.json").write_text(json.dumps(points))
    out = tmp_path / "m.json"
    rc = main(["-q", "match", str(A), str(B), "--points", str(tmp_path / "pts.json"),
               "--json", str(out), *options])  # fmt: skip
    assert rc == 0
    return json.loads(out.read_text())


def make_session(options: list[str]) -> DemoSession:
    args = build_parser().parse_args(["demo", *options])

    def loader(preset: str):
        return load_pipeline(argparse.Namespace(**{**vars(args), "preset": preset}))

    return DemoSession(loader, args.preset, args.category)


@pytest.fixture(scope="module")
def session(tiny_models) -> DemoSession:
    return make_session(tiny_options(tiny_models))


def test_match_equals_cli_points_and_extracts_each_image_once(session, tiny_models, tmp_path):
    ref = cli_points(tiny_options(tiny_models), POINTS, tmp_path)
    before = session.extracted()
    got = [session.match(A, B, x, y) for x, y in POINTS]
    assert [[g["x"], g["y"]] for g in got] == ref["points_b"]
    assert [g["score"] for g in got] == pytest.approx(ref["scores"], abs=1e-6)
    assert session.extracted() - before <= 2  # A and B once, not once per click
    session.match(B, A, 10, 10)  # the other direction reuses both images' features
    assert session.extracted() - before <= 2


def test_click_marks_the_match_and_heat_map_peaks_there(session):
    shown_a, shown_b, heat, result = session.click(A, B, 120, 200)
    assert result["a"] == [120.0, 200.0]
    assert result == {"a": [120.0, 200.0], **session.match(A, B, 120, 200)}
    assert shown_a.shape == (375, 500, 3) and shown_b.shape == heat.shape == (332, 500, 3)
    for img, xy in ((shown_a, (120, 200)), (shown_b, (result["x"], result["y"]))):
        cx, cy = viz.marker_centre(img)
        assert abs(cx - xy[0]) <= 1 and abs(cy - xy[1]) <= 1
    fa, fb = session.fused(A, B)
    sim = point_similarity(fa, fb, (120, 200))
    # the matched cell is the most similar cell of B's content (the heat map's maximum)
    col, row = fb.geometry[0].to_cell(np.array([[result["x"], result["y"]]]))[0].tolist()
    content = fb.geometry[0].content_mask()
    assert float(sim[row, col]) == pytest.approx(float(sim[content].max()), abs=1e-5)
    assert float(sim[row, col]) == pytest.approx(result["score"], abs=1e-5)


def test_pca_panel_is_both_images_side_by_side(session):
    panel = session.pca(A, B)
    assert panel.shape == (375, 1000, 3) and panel.dtype == np.uint8
    same = session.pca(A, A)
    np.testing.assert_array_equal(same[:, :500], same[:, 500:])  # same image, same colours
    assert len(np.unique(panel.reshape(-1, 3), axis=0)) > 10


def test_swap_gif(session, tmp_path):
    from PIL import Image

    out = session.swap_gif(A, B, tmp_path / "swap.gif", max_side=64)
    assert Image.open(out).n_frames > 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swap.gif"]


def test_describe_names_preset_and_model(session, tiny_models):
    text = session.describe()
    assert "preset **dino**" in text and str(tiny_models["dino"]) in text
    assert "Stable Diffusion" not in text


def test_unknown_preset_is_a_one_line_error(session):
    from sdcorr.errors import SdcorrError

    with pytest.raises(SdcorrError, match="unknown preset 'nope'"):
        session.match(A, B, 1, 1, preset="nope")


def test_point_off_a_is_rejected(session):
    from sdcorr.errors import PointsError

    with pytest.raises(PointsError, match="outside"):
        session.match(A, B, 900, 10)


def test_preset_with_missing_models_is_a_one_line_error(session):
    from sdcorr.errors import SdcorrError

    with pytest.raises(SdcorrError) as err:  # "sd" needs Stable Diffusion; the hub is offline
        session.match(A, B, 1, 1, preset="sd")
    assert "\n" not in str(err.value)
    assert session.match(A, B, 1, 1)["score"] > 0  # the loaded preset still works
