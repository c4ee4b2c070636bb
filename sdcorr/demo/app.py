"""The Gradio page of ``sdcorr demo`` (needs the ``sdcorr[demo]`` extra; imports Gradio).

Layout: two image inputs (upload, or the bundled examples), preset and category controls, and
two tabs. *Match*: click a point on A; B shows its match (a magenta crosshair in a white ring)
and B's similarity heat map for that point. *Features*: both images in joint PCA colours, and
the swap animation on request. Raw features are computed once per image by the pipeline's
feature cache (:class:`~sdcorr.demo.session.DemoSession`), so a further click costs only the
matching.

Programmatic endpoint ``/match``: ``(image A, image B, x, y) -> {"x", "y", "score"}`` in B's
pixels, with the server's preset, category and match options: what ``sdcorr match A B --points``
writes with the same flags (see the README for a ``gradio_client`` call).
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr  # the page's event signatures (gr.SelectData, gr.Progress) need it here

from ..config import PRESETS
from ..errors import SdcorrError
from .session import DemoSession

log = logging.getLogger("sdcorr")

#: Bundled example images (a source checkout's examples/images); absent in a wheel install.
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"


def example_pairs() -> list[list[str]]:
    """``[[A, B], ...]`` of bundled example images, empty when there are none."""
    imgs = sorted(str(p) for p in EXAMPLES.glob("*.jpg")) if EXAMPLES.is_dir() else []
    return [imgs[:2], imgs[1::-1]] if len(imgs) >= 2 else []


def build_app(session: DemoSession, title: str = "sdcorr: semantic correspondence") -> Any:
    """The ``gr.Blocks`` page driving ``session``.

    Args:
        session: models, feature cache and matching.
        title: page title.
    """
    on = _handlers(session)
    with gr.Blocks(title=title) as app:
        gr.Markdown(f"## {title}\nModels: {session.describe()}")
        with gr.Row():
            in_a = gr.Image(type="filepath", label="Image A", sources=["upload"], elem_id="in-a")
            in_b = gr.Image(type="filepath", label="Image B", sources=["upload"], elem_id="in-b")
        with gr.Row():
            preset = gr.Dropdown(list(PRESETS), value=session.preset, label="Preset")
            category = gr.Textbox(
                value=session.category or "", label="Category (SD prompt)", elem_id="category"
            )
        pairs = example_pairs()
        if pairs:
            gr.Examples(pairs, inputs=[in_a, in_b], label="Examples")
        status = gr.Markdown("Load two images (upload, or pick an example).", elem_id="status")
        show_a, show_b, heat, result = _match_tab()
        with gr.Tab("Features"):
            pca = gr.Image(label="Joint PCA colours (A | B)", interactive=False, format="png")
            swap_btn = gr.Button("Make the swap animation")
            gif = gr.Image(label="Swap animation", interactive=False, elem_id="swap")
        with gr.Row(visible=False):  # the /match endpoint's own inputs and output
            api_a = gr.File(type="filepath", label="image A")
            api_b = gr.File(type="filepath", label="image B")
            api_x, api_y = gr.Number(label="x"), gr.Number(label="y")
            api_out, api_btn = gr.JSON(label="match"), gr.Button("match")

        controls = [in_a, in_b, preset, category]
        prep_out = [show_a, show_b, heat, pca, status]
        for trigger in (in_a.change, in_b.change, preset.change, category.submit):
            trigger(on["prepare"], controls, prep_out, api_visibility="private")
        show_a.select(on["click"], controls, [show_a, show_b, heat, result],
                      api_visibility="private")  # fmt: skip
        swap_btn.click(on["swap"], controls, gif, api_visibility="private")
        api_btn.click(on["match"], [api_a, api_b, api_x, api_y], api_out, api_name="match")
    return app


def _match_tab() -> tuple[Any, Any, Any, Any]:
    """The *Match* tab: A to click on, B with the match, B's heat map, the match as text."""
    with gr.Tab("Match"):
        with gr.Row():
            show_a = gr.Image(
                label="A: click a point", interactive=False, format="png", elem_id="show-a"
            )
            show_b = gr.Image(label="B: match", interactive=False, format="png", elem_id="show-b")
            heat = gr.Image(
                label="B: similarity to the point", interactive=False, format="png",
                elem_id="heat-b",
            )  # fmt: skip
        result = gr.Textbox(label="Match: A's point and B's (x, y), score", elem_id="result")
    return show_a, show_b, heat, result


def _handlers(session: DemoSession) -> dict[str, Any]:
    """The page's event handlers; a user error is one line on the page, no traceback."""

    def _wrap(fn):
        @functools.wraps(fn)  # Gradio reads the signature (SelectData, Progress) through it
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except SdcorrError as err:  # user errors: one line on the page (or to the
                log.info("refused: %s", err)  # client) and in the log, no traceback
                raise gr.Error(str(err), print_exception=False) from None

        return run

    def prepare(a, b, preset, category, progress=gr.Progress()):  # noqa: B008 (Gradio idiom)
        if not a or not b:
            return None, None, None, None, "Load two images (upload, or pick an example)."
        session.fused(a, b, preset, category, lambda f, m: progress(f, desc=m))
        pca = session.pca(a, b, preset, category)
        note = f"Features ready ({session.describe(preset)}). Click a point on A."
        return a, b, None, pca, note

    def click(a, b, preset, category, evt: gr.SelectData):
        x, y = evt.index
        shown_a, shown_b, heat, result = session.click(a, b, x, y, preset, category)
        return shown_a, shown_b, heat, json.dumps(result)

    def swap(a, b, preset, category, progress=gr.Progress()):  # noqa: B008
        if not a or not b:
            raise gr.Error("load two images first")
        progress(0.2, desc="dense matching")
        out = Path(tempfile.mkdtemp(prefix="sdcorr-demo-")) / "swap.gif"
        return str(session.swap_gif(a, b, out, preset, category))

    def api_match(image_a: str, image_b: str, x: float, y: float) -> dict[str, float]:
        return session.match(image_a, image_b, x, y)  # checks x and y (null, text: one line)

    return {"prepare": _wrap(prepare), "click": _wrap(click), "swap": _wrap(swap),
            "match": _wrap(api_match)}  # fmt: skip
