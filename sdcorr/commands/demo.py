"""``sdcorr demo``: serve the interactive correspondence page on a local port.

The model and match options are ``sdcorr match``'s (:mod:`sdcorr.commands.options`), resolved the
same way, so the page's ``/match`` endpoint gives what ``sdcorr match A B --points`` writes with
the same flags (a preset's soft-argmax and flip alignment included). Switching the preset on the
page resolves that preset with the same flags. Needs the optional extra
``pip install 'sdcorr[demo]'`` (Gradio); without it the command fails with one line saying so,
before any model loads.
"""

from __future__ import annotations

import argparse
import logging
import os

from ..errors import SdcorrError
from .options import add_match_options, add_model_options, load_pipeline, resolve_args

log = logging.getLogger("sdcorr")

HELP = "serve an interactive page: click a point on A, see its match on B (needs sdcorr[demo])"


class MissingExtraError(SdcorrError):
    """An optional dependency of a command is not installed."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    add_match_options(p)
    add_model_options(p)


def import_gradio():
    """``gradio``, or a :class:`MissingExtraError` naming the extra to install."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the page
    try:
        import gradio
    except ImportError:
        raise MissingExtraError("sdcorr demo needs gradio: pip install 'sdcorr[demo]'") from None
    return gradio


def make_session(args: argparse.Namespace):
    """The :class:`~sdcorr.demo.session.DemoSession` of the flags (options checked before any
    model loads; the default preset's models load now, the others on first use)."""
    from ..demo.session import DemoSession

    resolved = resolve_args(args)  # user errors before any model loads

    def loader(preset: str):
        return load_pipeline(
            resolved if preset == args.preset else resolve_args(args, preset=preset)
        )

    return DemoSession(loader, args.preset, args.category, masks=resolved.run.masks)


def run(args: argparse.Namespace) -> int:
    import_gradio()  # before anything imports it, and before any model loads
    from ..demo.app import build_app

    session = make_session(args)
    app = build_app(session)
    log.info("serving on http://%s:%d (Ctrl+C stops)", args.host, args.port)
    try:
        app.queue().launch(
            server_name=args.host, server_port=args.port, quiet=args.quiet, show_error=True
        )
    except OSError as err:  # port taken, address not available
        raise SdcorrError(f"cannot serve on {args.host}:{args.port}: {err}") from None
    return 0
