"""``sdcorr demo``: serve the interactive correspondence page on a local port.

The model and match options are ``sdcorr match``'s (:mod:`sdcorr.commands.options`), resolved the
same way, so the page's ``/match`` endpoint gives what ``sdcorr match A B --points`` writes with
the same flags (a preset's soft-argmax and flip alignment included). Switching the preset on the
page resolves that preset with the same flags (leaving out those of a branch it lacks). Needs
the optional extra ``pip install 'sdcorr[demo]'`` (Gradio); without it the command fails with
one line saying so, before any model loads. The address is checked before any model loads too
(:func:`check_address`: a port already taken, an address this machine does not have), a host
other than a loopback address draws a warning that anyone who reaches it can use the page
(:func:`exposure_warning`), and "serving on" is printed once the server answers.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import os
import socket

from ..errors import SdcorrError
from ..options import Resolved, for_preset, resolve
from .options import (
    add_match_options,
    add_model_options,
    int_at_least,
    load_pipeline,
    model_options,
    resolve_args,
    run_options,
)

log = logging.getLogger("sdcorr")

HELP = "serve an interactive page: click a point on A, see its match on B (needs sdcorr[demo])"


class MissingExtraError(SdcorrError):
    """An optional dependency of a command is not installed."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    p.add_argument("--port", type=int_at_least(1), default=7860, help="port to serve on")
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


def make_session(args: argparse.Namespace, resolved: Resolved | None = None):
    """The :class:`~sdcorr.demo.session.DemoSession` of the flags (options checked before any
    model loads, unless ``resolved`` is their resolution already; the default preset's models
    load now, the others on first use)."""
    from ..demo.session import DemoSession

    resolved = resolved or resolve_args(args)  # user errors before any model loads

    def loader(preset: str):
        if preset == args.preset:
            return load_pipeline(resolved)
        return load_pipeline(resolve(for_preset(model_options(args), preset), run_options(args)))

    return DemoSession(loader, args.preset, args.category, masks=resolved.run.masks)


def exposure_warning(host: str, port: int) -> str | None:
    """The warning for serving on ``host``, or ``None`` for a loopback address (only this
    machine can reach it)."""
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:  # a host name other than localhost, or "" (every interface)
        pass
    return (
        f"warning: --host {host or '(every interface)'} is not a loopback address: anyone who"
        f" can reach this machine on port {port} can upload files and run the models; use"
        " --host 127.0.0.1 (the default) to keep the page to this machine"
    )


def check_address(host: str, port: int) -> None:
    """Raise a one-line :class:`SdcorrError` when ``port`` cannot be served on ``host`` (taken,
    or an address this machine does not have), found by binding it as the server will
    (``SO_REUSEADDR``), and on 127.0.0.1 as Gradio checks it, before any model loads."""
    addresses = {(host, port), ("127.0.0.1", port)}
    for name, number in sorted(addresses):
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                name.strip("[]") or None, number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
        except OSError as err:  # gaierror (unknown host) is an OSError too
            taken = err.errno == errno.EADDRINUSE
            why = "the port is already in use" if taken else err.strerror or str(err)
            raise SdcorrError(f"cannot serve on {host}:{port}: {why} (--host/--port)") from None


def run(args: argparse.Namespace) -> int:
    import_gradio()  # before anything imports it, and before any model loads
    warning = exposure_warning(args.host, args.port)
    if warning:
        log.warning(warning)
    resolved = resolve_args(args)  # user errors first, then the address, then the models
    check_address(args.host, args.port)
    from ..demo.app import build_app

    session = make_session(args, resolved)
    app = build_app(session)
    try:
        app.queue().launch(
            server_name=args.host, server_port=args.port, quiet=args.quiet, show_error=True,
            prevent_thread_lock=True,
        )  # fmt: skip
    except OSError as err:  # taken since the check (a race), address not available
        raise SdcorrError(f"cannot serve on {args.host}:{args.port}: {err}") from None
    log.info("serving on http://%s:%d (Ctrl+C stops)", args.host, args.port)
    app.block_thread()
    return 0
