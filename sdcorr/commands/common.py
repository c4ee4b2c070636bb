"""Options and steps shared by the ``match`` and ``extract`` subcommands.

Option values are checked by argparse ``type=`` functions (:func:`int_at_least`,
:func:`float_above`, :func:`side`), so a bad value is rejected while the command line is parsed,
before anything loads, with the option's name in the one-line error. Checks that need several
options or the preset (:func:`check_frames`, :func:`check_fits`) run right after, still before
any model loads. A run's outputs are staged under temporary names and renamed together at the
end (:class:`Outputs`), so a run leaves all of its outputs or none.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from ..config import PipelineConfig
from ..errors import ConfigError, ImageLoadError, OutputError
from ..io import check_writable

log = logging.getLogger("sdcorr")

#: Frame pixels per cell of the coarsest hooked U-Net layer (s5) of the SD-1.5/2.1 family: SD
#: frames, tiles and tile offsets must be multiples of it.
SD_COARSEST = 64
#: Frame pixels per cell of the finest SD map used (s3) and of a DINOv2 patch.
SD_FINEST, DINO_PATCH = 16, 14


# ---------------------------------------------------------------------------- option types
def int_at_least(low: int) -> Callable[[str], int]:
    """argparse ``type``: an integer ``>= low``."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def float_above(low: float) -> Callable[[str], float]:
    """argparse ``type``: a finite number ``> low``."""

    def parse(text: str) -> float:
        value = _number(text, float)
        if not value > low or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number > {low:g}, got {text}")
        return value

    return parse


def side(multiple: int, zero: str | None = None) -> Callable[[str], int]:
    """argparse ``type``: a positive multiple of ``multiple`` (or 0 when ``zero`` says what it
    means)."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if value == 0 and zero:
            return 0
        if value < multiple or value % multiple:
            also = f" (or 0: {zero})" if zero else ""
            raise argparse.ArgumentTypeError(
                f"must be a positive multiple of {multiple}{also}, got {value}"
            )
        return value

    return parse


def _number(text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {text!r}") from None


# ---------------------------------------------------------------------------- model options
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``--preset --category --dino-model --sd-model --device --dtype --seed --attention`` and the
    frame sizes."""
    from ..config import PRESETS

    p.add_argument("--preset", default="sd-dino", choices=list(PRESETS), help="configuration")
    p.add_argument(
        "--category", default=None, help='object category; SD prompt "a photo of a {category}"'
    )
    p.add_argument("--dino-model", default=None, help="DINOv2 hub id, alias or local folder")
    p.add_argument(
        "--sd-model", default=None, help="Stable Diffusion hub id, alias or local folder"
    )
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on CUDA, else fp32)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the fixed SD noise (default 42)")
    p.add_argument(
        "--attention", default="sdpa", choices=["sdpa", "xformers"], help="U-Net attention"
    )
    p.add_argument(
        "--sd-frame",
        type=side(SD_COARSEST),
        default=None,
        help=f"SD frame side (default 960; a multiple of {SD_COARSEST})",
    )
    p.add_argument(
        "--sd-tile",
        type=side(SD_COARSEST, zero="no tiles"),
        default=None,
        help=f"SD tile side (default 512; a multiple of {SD_COARSEST}; 0: no tiles)",
    )
    p.add_argument("--dino-frame", type=side(DINO_PATCH), default=None,
                   help=f"DINOv2 frame side (default 840; a multiple of {DINO_PATCH})")  # fmt: skip


def resolve_config(args: argparse.Namespace) -> PipelineConfig:
    """The preset with the command-line overrides, checked before any model loads."""
    from ..config import get_preset
    from ..device import resolve_device, resolve_dtype

    cfg = override_config(get_preset(args.preset), args)
    check_frames(cfg)
    resolve_dtype(args.dtype, resolve_device(args.device))
    return cfg


def check_frames(cfg: PipelineConfig) -> None:
    """Raise :class:`ConfigError`, naming the option, when the SD tile does not fit the frame."""
    sd = cfg.sd
    if sd is not None and sd.tile_size is not None and sd.tile_size > sd.frame:
        raise ConfigError(
            f"--sd-tile {sd.tile_size} is larger than the SD frame {sd.frame} (--sd-frame)"
        )


def check_fits(cfg: PipelineConfig, size: tuple[int, int], name: str) -> None:
    """Raise :class:`ImageLoadError` when an image of ``size = (w, h)`` is too thin to cover one
    feature cell in a model frame (all of its cells would be padding)."""
    w, h = size
    frames = []
    if cfg.dino is not None:
        frames.append((cfg.dino.frame, DINO_PATCH, "DINOv2", "--dino-frame"))
    if cfg.sd is not None:
        frames.append((cfg.sd.frame, SD_FINEST, "SD", "--sd-frame"))
    for frame, cell, what, flag in frames:
        short = round(frame * min(w, h) / max(w, h))
        if short < cell:
            raise ImageLoadError(
                f"{name} is {w}x{h}: in the {frame}-px {what} frame its short side is {short} px,"
                f" less than one {cell}-px feature cell; crop it or raise {flag}"
            )


def load_pipeline(args: argparse.Namespace, config: PipelineConfig | None = None):
    """Build :class:`~sdcorr.pipeline.SDDino` from the model arguments."""
    from ..device import resolve_device
    from ..pipeline import SDDino

    cfg = config if config is not None else resolve_config(args)
    return SDDino.from_pretrained(
        config=cfg,
        device=resolve_device(args.device),
        dtype=args.dtype,
        dino_model=args.dino_model,
        sd_model=args.sd_model,
        attention=args.attention,
        progress=log.info,
    )


def override_config(cfg: PipelineConfig, args: argparse.Namespace) -> PipelineConfig:
    """Apply ``--seed``, ``--sd-frame``, ``--sd-tile`` and ``--dino-frame`` to a preset."""
    if cfg.sd is not None:
        sd = cfg.sd
        if args.seed is not None:
            sd = replace(sd, seed=args.seed)
        if args.sd_frame is not None:
            sd = replace(sd, frame=args.sd_frame)
        if args.sd_tile is not None:
            sd = replace(sd, tile_size=args.sd_tile or None)
        cfg = replace(cfg, sd=sd)
    if cfg.dino is not None and args.dino_frame is not None:
        cfg = replace(cfg, dino=replace(cfg.dino, frame=args.dino_frame))
    return cfg


def check_distinct(paths: dict[str, str | None]) -> None:
    """Raise :class:`OutputError` when two output options name the same file."""
    seen: dict[str, str] = {}
    for option, path in paths.items():
        if not path:
            continue
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            raise OutputError(f"{seen[key]} and {option} name the same file: {path}")
        seen[key] = option


# ---------------------------------------------------------------------------- outputs
class Outputs:
    """A run's output files, staged under temporary names and renamed together at the end.

    ``stage(target)`` returns a temporary path beside ``target`` to write to; leaving the
    ``with`` block normally renames every staged file to its target (with Ctrl-C held back for
    those few renames), and an error or Ctrl-C inside the block removes them all. A write that
    fails with ``OSError`` (disk full, folder gone) becomes a one-line :class:`OutputError`.
    """

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path]] = []

    def stage(self, target: str | Path) -> Path:
        target = check_writable(target)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part{target.suffix}")
        self.staged.append((tmp, target))
        return tmp

    def commit(self) -> None:
        with _sigint_held():
            for tmp, target in self.staged:
                os.replace(tmp, target)

    def discard(self) -> None:
        for tmp, _ in self.staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, kind, err, tb) -> None:
        if kind is None:
            try:
                self.commit()
                return
            except OSError as exc:
                self.discard()
                raise self._error(exc) from None
        self.discard()
        if isinstance(err, OSError):
            raise self._error(err) from None

    def _error(self, err: OSError) -> OutputError:
        """One line naming the output (not its temporary name) and the system's reason."""
        where = str(err.filename) if err.filename else ""
        for _, target in self.staged:
            if where and Path(where).name.startswith(f".{target.name}."):
                where = str(target)
        return OutputError(f"cannot write {where or 'an output'}: {err.strerror or err}")


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) for the block, where the platform allows it."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # pragma: no cover - Windows
        yield
        return
    mask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        mask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Log and record the wall time of one stage."""
    t0 = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t0
    log.info("%s: %.2f s", name, timings[name])
