"""DemoSession (no Gradio): endpoint equals ``sdcorr match --points``, features cached, pictures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sdcorr import viz
from sdcorr.cli import build_parser, main
from sdcorr.commands.demo import make_session as session_of
from sdcorr.config import to_dict
from sdcorr.demo.session import DemoSession
from sdcorr.match.sparse import point_similarity

DOG = (
    Path(__file__).resolve().parents[1] / "data" / "spair-mini" / "SPair-71k" / "JPEGImages" / "dog"
)
A, B = DOG / "2009_001225.jpg", DOG / "2011_002398.jpg"
POINTS = [[50.0, 60.0], [120.0, 200.0], [300.0, 100.0]]
A_WIDTH = 500


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
    """The session ``sdcorr demo OPTIONS`` serves."""
    return session_of(build_parser().parse_args(["demo", *options]))


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


# ---------------------------------------------------------------------------- demo = match
def _mirror_of_a(tmp_path: Path) -> Path:
    from sdcorr.flip import mirror_image

    path = tmp_path / "mirror.png"  # lossless: its pixels are exactly mirror(A)'s
    mirror_image(A).save(path)
    return path


def _session_equals_cli(options: list[str], b: Path, tmp_path: Path):
    """The session's matches of POINTS (A → b) equal ``sdcorr match A b --points``'s JSON;
    returns that JSON and the session."""
    pts = tmp_path / "pts.json"
    pts.write_text(json.dumps(POINTS))
    out = tmp_path / "m.json"
    rc = main(["-q", "match", str(A), str(b), "--points", str(pts), "--json", str(out),
               *options])  # fmt: skip
    assert rc == 0
    ref = json.loads(out.read_text())
    session = make_session(options)
    got = [session.match(A, b, x, y) for x, y in POINTS]
    assert [[g["x"], g["y"]] for g in got] == ref["points_b"]
    assert [g["score"] for g in got] == pytest.approx(ref["scores"], abs=1e-6)
    config = json.loads(json.dumps(to_dict(session.pipeline().config)))
    assert config == ref["config"]  # one resolution, one config
    return ref, session


def test_geoaware_session_applies_the_presets_flip_alignment_and_soft_argmax(
    tiny_models, tmp_path
) -> None:
    """``sdcorr demo --preset geoaware`` (tiny SD + tiny DINO) matches A against its mirror as
    ``sdcorr match --preset geoaware`` does: from A's mirror (identical features to B, so the
    flip decision is certain), refined by the soft-argmax."""
    options = ["--preset", "geoaware", "--sd-model", str(tiny_models["sd"]), "--dino-model",
               str(tiny_models["dino"]), "--sd-frame", "128", "--sd-tile", "128", "--dino-frame",
               "112", "--device", "cpu"]  # fmt: skip
    b = _mirror_of_a(tmp_path)
    ref, session = _session_equals_cli(options, b, tmp_path)
    assert ref["flipped"] is True
    assert ref["config"]["match"]["soft_argmax"] and ref["config"]["match"]["flip_align"]
    # soft-argmax: matches off the cell centres (a nearest-neighbour match sits on one)
    geo = session.fused(A, b)[1].geometry[0]
    centres = geo.cell_to_original(geo.to_cell(np.array(ref["points_b"]))).numpy()
    assert not np.allclose(centres, ref["points_b"])


@pytest.mark.realweights
@pytest.mark.slow
def test_match_endpoint_equals_cli_with_flip_and_soft_argmax_dinov2_small(
    dinov2_small, tmp_path
) -> None:
    """Done-when of issue 17: the demo's ``/match`` (this session method) gives, for points of A
    matched against A's mirror, exactly what ``sdcorr match A mirror(A) --points ... --preset
    dino --flip-align --soft-argmax`` writes, with the real DINOv2-S weights (at a 448 frame,
    32x32 cells, to keep the suite fast)."""
    options = ["--preset", "dino", "--dino-model", str(dinov2_small), "--device", "cpu",
               "--flip-align", "--soft-argmax", "--dino-frame", "448"]  # fmt: skip
    ref, _ = _session_equals_cli(options, _mirror_of_a(tmp_path), tmp_path)
    assert ref["flipped"] is True and ref["config"]["match"]["soft_argmax"]
    # and the matches are right: each lands nearer its mirror position than its own position
    got, pts = np.array(ref["points_b"]), np.array(POINTS)
    mirrored = np.stack([A_WIDTH - 1 - pts[:, 0], pts[:, 1]], axis=1)
    assert (np.linalg.norm(got - mirrored, axis=1) < np.linalg.norm(got - pts, axis=1)).all()
