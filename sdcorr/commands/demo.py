"""``sdcorr demo``: serve the interactive correspondence page on a local port.

Needs the optional extra ``pip install 'sdcorr[demo]'`` (Gradio); without it the command fails
with one line saying so, before any model loads.
"""

from __future__ import annotations

import argparse
import logging
import os

from ..errors import SdcorrError
from .common import add_model_arguments, load_pipeline

log = logging.getLogger("sdcorr")

HELP = "serve an interactive page: click a point on A, see its match on B (needs sdcorr[demo])"


class MissingExtraError(SdcorrError):
    """An optional dependency of a command is not installed."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument(
        "--soft-argmax", action="store_true", help="sub-cell refinement, as in sdcorr match"
    )
    add_model_arguments(p)


def import_gradio():
    """``gradio``, or a :class:`MissingExtraError` naming the extra to install."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the page
    try:
        import gradio
    except ImportError:
        raise MissingExtraError("sdcorr demo needs gradio: pip install 'sdcorr[demo]'") from None
    return gradio


def run(args: argparse.Namespace) -> int:
    import_gradio()  # before anything imports it, and before any model loads
    from ..demo.app import build_app
    from ..demo.session import DemoSession

    def loader(preset: str):
        return load_pipeline(argparse.Namespace(**{**vars(args), "preset": preset}))

    session = DemoSession(loader, args.preset, args.category, soft_argmax=args.soft_argmax)
    app = build_app(session)
    log.info("serving on http://%s:%d (Ctrl+C stops)", args.host, args.port)
    try:
        app.queue().launch(
            server_name=args.host, server_port=args.port, quiet=args.quiet, show_error=True
        )
    except OSError as err:  # port taken, address not available
        raise SdcorrError(f"cannot serve on {args.host}:{args.port}: {err}") from None
    return 0
