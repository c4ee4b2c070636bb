"""``sdcorr demo`` served for real: the ``/match`` endpoint and the page in headless Chromium.

The server runs in a subprocess on a free 127.0.0.1 port and is always stopped
(:func:`server.demo_server`). The browser test drives Debian's ``chromium`` through Playwright
(``executable_path``) and skips, saying why, when either is missing. Set
``SDCORR_UPDATE_SCREENSHOT=1`` to also write the page's screenshot (real DINOv2-S weights) to
``docs/demo.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from sdcorr.cli import main
from sdcorr.commands.demo import import_gradio
from sdcorr.errors import SdcorrError

from .server import REPO, demo_server
from .test_session import POINTS, A, B, cli_points, tiny_options

MARKER_JS = """(sel) => {
  const img = document.querySelector(sel);
  if (!img || !img.complete || !img.naturalWidth) return null;
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  const cols = new Array(c.width).fill(0), rows = new Array(c.height).fill(0);
  for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
    const i = 4 * (y * c.width + x);
    if (d[i] > 247 && d[i + 1] < 8 && d[i + 2] > 247) { cols[x]++; rows[y]++; }
  }
  const x = cols.indexOf(Math.max(...cols)), y = rows.indexOf(Math.max(...rows));
  if (cols[x] < c.height / 2 || rows[y] < c.width / 2) return null;
  return [x, y, c.width, c.height];
}"""


def _client(url: str):
    gradio_client = pytest.importorskip("gradio_client", reason="needs the sdcorr[demo] extra")
    return gradio_client.Client(url, verbose=False), gradio_client.handle_file


@pytest.fixture(scope="module")
def tiny_server(tiny_models):
    pytest.importorskip("gradio", reason="sdcorr demo needs the sdcorr[demo] extra (Gradio)")
    with demo_server(tiny_options(tiny_models)) as url:
        yield url


def test_demo_without_gradio_is_a_one_line_error(monkeypatch, capsys, tiny_models) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert main(["demo", *tiny_options(tiny_models)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: sdcorr demo needs gradio: pip install 'sdcorr[demo]'"
    with pytest.raises(SdcorrError, match=r"needs gradio: pip install 'sdcorr\[demo\]'"):
        import_gradio()  # the command's own guard, for callers that skip the CLI's check


def _check_endpoint(url: str, options: list[str], tmp_path: Path) -> None:
    client, handle_file = _client(url)
    ref = cli_points(options, POINTS, tmp_path)
    for (x, y), pb, score in zip(POINTS, ref["points_b"], ref["scores"], strict=True):
        got = client.predict(handle_file(str(A)), handle_file(str(B)), x, y, api_name="/match")
        assert set(got) == {"x", "y", "score"}
        assert [got["x"], got["y"]] == pb
        assert got["score"] == pytest.approx(score, abs=1e-6)


@pytest.mark.slow  # the server subprocess takes 20-40 s to start on 2 busy cores
def test_match_endpoint_equals_cli_points_tiny(tiny_server, tiny_models, tmp_path) -> None:
    _check_endpoint(tiny_server, tiny_options(tiny_models), tmp_path)


@pytest.mark.slow  # shares the tiny server of the test above
@pytest.mark.parametrize("x", [None, "abc"])
def test_match_endpoint_answers_a_non_number_with_one_line(tiny_server, x) -> None:
    """``x = null`` (or text) sent to ``/match``: the client gets one clear line, not a Python
    error such as "float() argument must be a string or a real number"."""
    from gradio_client.exceptions import AppError

    client, handle_file = _client(tiny_server)
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(A)), handle_file(str(B)), x, 10.0, api_name="/match")
    shown = "null" if x is None else '"abc"'
    assert str(err.value) == f"x must be a number (a pixel coordinate in A), got {shown}"


def _real_options(folder: Path) -> list[str]:
    """Real DINOv2-S at a 448 frame (32 x 32 cells): the server and the CLI must agree on
    meaningful features; the faithful 840 frame is the real-weights tests' (4x the tokens)."""
    return ["--preset", "dino", "--dino-model", str(folder), "--device", "cpu",
            "--dino-frame", "448"]  # fmt: skip


@pytest.fixture(scope="module")
def real_server(dinov2_small):
    """One server on the real DINOv2-S weights for the module's real-weights tests (Gradio
    stores an upload under its content hash, so the second test finds A and B extracted)."""
    pytest.importorskip("gradio", reason="sdcorr demo needs the sdcorr[demo] extra (Gradio)")
    with demo_server(_real_options(dinov2_small)) as url:
        yield url


@pytest.mark.realweights
@pytest.mark.slow
def test_match_endpoint_equals_cli_points_dinov2_small(real_server, dinov2_small, tmp_path) -> None:
    _check_endpoint(real_server, _real_options(dinov2_small), tmp_path)


def _chromium() -> str:
    path = os.environ.get("SDCORR_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
    )
    if not path:
        pytest.skip("no Chromium installed (apt-get install chromium, or set SDCORR_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of the system Chromium (skips first, before any server starts)."""
    return _chromium()


def _drive_page(url: str, shot: Path) -> None:
    """Load A and B, click a point on A, check B's marker against ``/match``; screenshot."""
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (dev extra)")
    client, handle_file = _client(url)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(180_000)
            page.goto(url)
            page.set_input_files("#in-a input[type=file]", str(A))
            page.set_input_files("#in-b input[type=file]", str(B))
            page.wait_for_selector("#status :text('Features ready')")
            img = page.wait_for_selector("#show-a img")
            box = img.bounding_box()
            size = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
            fx, fy = 0.3, 0.6  # where on A we click (fraction of the displayed image)
            img.click(position={"x": fx * box["width"], "y": fy * box["height"]})
            page.wait_for_function("() => document.querySelector('#result textarea').value")
            shown = json.loads(page.input_value("#result textarea"))
            x, y = shown["a"]
            assert abs(x - fx * size[0]) <= 2 and abs(y - fy * size[1]) <= 2
            want = client.predict(handle_file(str(A)), handle_file(str(B)), x, y, api_name="/match")
            assert {k: shown[k] for k in ("x", "y", "score")} == want
            marker = page.wait_for_function(MARKER_JS, arg="#show-b img").json_value()
            assert marker[2:] == [500, 332]  # the marked B is shown at B's own size
            assert abs(marker[0] - want["x"]) <= 0.5 and abs(marker[1] - want["y"]) <= 0.5
            assert page.wait_for_function(MARKER_JS, arg="#heat-b img").json_value() == marker
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
@pytest.mark.slow
def test_click_in_browser_marks_the_endpoints_match(chromium, tiny_server, tmp_path) -> None:
    _drive_page(tiny_server, tmp_path / "demo.png")


@pytest.mark.browser
@pytest.mark.realweights
@pytest.mark.slow
def test_click_in_browser_dinov2_small(chromium, real_server, tmp_path) -> None:
    """Also writes ``docs/demo.png`` when ``SDCORR_UPDATE_SCREENSHOT=1``."""
    _drive_page(real_server, tmp_path / "demo.png")
    if os.environ.get("SDCORR_UPDATE_SCREENSHOT") == "1":
        from PIL import Image

        (REPO / "docs").mkdir(exist_ok=True)
        shot = Image.open(tmp_path / "demo.png").convert("RGB").quantize(256)
        shot.save(REPO / "docs" / "demo.png", optimize=True)
