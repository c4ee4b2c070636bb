"""Command line: ``sdcorr match | extract | download | demo | eval | pretrain``.

``main(argv) -> int`` is the entry point (testable without a subprocess). User errors
(:class:`sdcorr.errors.SdcorrError` and argparse usage errors) print one line ``error: ...`` and
return 2; no traceback and no partial output files. ``-q``/``-v`` work before or after the
subcommand; ``-q`` also silences the "Loading weights" bars of transformers, diffusers and
huggingface_hub. Log lines go through ``tqdm.write`` so they never break a progress bar.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

from . import __version__
from .errors import SdcorrError

log = logging.getLogger("sdcorr")

# subcommand -> module with HELP, add_arguments(parser) and run(args) -> int
COMMANDS: dict[str, str] = {
    "match": "sdcorr.commands.match",
    "extract": "sdcorr.commands.extract",
    "download": "sdcorr.commands.download",
    "demo": "sdcorr.commands.demo",
    "eval": "sdcorr.commands.eval",
    "pretrain": "sdcorr.commands.pretrain",
}
# subcommand -> (import name, pip name) of the optional packages it needs, and the extra
EXTRAS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "pretrain": ("pretrain", [("kornia", "kornia"), ("yaml", "pyyaml")]),
    "demo": ("demo", [("gradio", "gradio")]),
}


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one ``error: ...`` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after each option's help, except for ``None``/``False`` defaults."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def verbosity(p: argparse.ArgumentParser, default: object) -> None:
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="no progress bars or info logs (also the libraries' download/load bars)",
    )
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="debug logging")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = Parser(
        prog="sdcorr",
        description="Zero-shot semantic correspondence (SD + DINOv2 features).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbosity(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as err:
            if err.name and modname.startswith(err.name):
                continue  # optional command not present in this install
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, formatter_class=HelpFormatter)
        # SUPPRESS: a -q given before the subcommand is not reset by the subparser's default
        verbosity(p, argparse.SUPPRESS)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


class _TqdmHandler(logging.Handler):
    """Writes log records with ``tqdm.write`` (to stderr), which keeps progress bars intact."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


@contextlib.contextmanager
def cli_logging(quiet: bool, verbose: bool) -> Iterator[None]:
    """Route the ``sdcorr`` logger through :class:`_TqdmHandler` at the chosen level for the
    block; its previous handlers, level and propagation are restored afterwards."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    saved = (log.level, log.propagate)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.propagate = False  # the CLI's handler prints; no second copy through the root logger
    log.setLevel(level)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


# (module, disable, enable, is-enabled) of the libraries' own progress-bar switches
_BAR_SWITCHES = (
    ("huggingface_hub.utils", "disable_progress_bars", "enable_progress_bars", None),
    ("transformers.utils.logging", "disable_progress_bar", "enable_progress_bar",
     "is_progress_bar_enabled"),
    ("diffusers.utils.logging", "disable_progress_bar", "enable_progress_bar",
     "is_progress_bar_enabled"),
)  # fmt: skip


@contextlib.contextmanager
def third_party_bars(quiet: bool) -> Iterator[None]:
    """With ``quiet``, switch off the progress bars of huggingface_hub, transformers and diffusers
    for the block (restored afterwards, so calling ``main`` in-process changes nothing)."""
    undo: list[Callable[[], None]] = []
    if quiet:
        for modname, off, on, enabled in _BAR_SWITCHES:
            try:
                mod = importlib.import_module(modname)
            except ImportError:
                continue
            hub = enabled is None
            was_on = not mod.are_progress_bars_disabled() if hub else getattr(mod, enabled)()
            getattr(mod, off)()
            if was_on:
                undo.append(getattr(mod, on))
    try:
        yield
    finally:
        for fn in undo:
            fn()


def check_extras(command: str) -> None:
    """Raise a one-line :class:`SdcorrError` when ``command`` needs an extra that is missing."""
    if command not in EXTRAS:
        return
    extra, needs = EXTRAS[command]
    missing = [pip for mod, pip in needs if importlib.util.find_spec(mod) is None]
    if missing:
        raise SdcorrError(
            f"sdcorr {command} needs {', '.join(missing)}: pip install 'sdcorr[{extra}]'"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help/--version (0) or a usage error (2)
        return int(exit_.code or 0)
    with cli_logging(args.quiet, args.verbose), third_party_bars(args.quiet):
        return run_guarded(args._run, args)


def run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``, with user errors printed as one ``error: ...`` line and status 2."""
    try:
        check_extras(getattr(args, "command", ""))
        return run(args)
    except SdcorrError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
