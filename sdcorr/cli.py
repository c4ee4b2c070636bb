"""Command line: ``sdcorr match | extract | download | pretrain``.

``main(argv) -> int`` is the entry point (testable without a subprocess). User errors
(:class:`sdcorr.errors.SdcorrError`) print one line ``error: ...`` and return 2; no traceback and
no partial output files.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from .errors import SdcorrError

log = logging.getLogger("sdcorr")

# subcommand -> module with HELP, add_arguments(parser) and run(args) -> int
COMMANDS: dict[str, str] = {
    "match": "sdcorr.commands.match",
    "extract": "sdcorr.commands.extract",
    "download": "sdcorr.commands.download",
    "demo": "sdcorr.commands.demo",
    "pretrain": "sdcorr.pretrain.cli",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="sdcorr", description="Zero-shot semantic correspondence (SD + DINOv2 features)."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as err:
            if err.name and modname.startswith(err.name):
                continue  # optional command not present in this install
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    log.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        return int(exit_.code or 0)
    _setup_logging(args.quiet, args.verbose)
    return run_guarded(args._run, args)


def run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``, with user errors printed as one ``error: ...`` line and status 2."""
    try:
        return run(args)
    except SdcorrError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
