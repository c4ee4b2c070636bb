"""The model and match options every command shares, added by one function and resolved once.

:func:`add_model_options` adds the flags that choose and change the pipeline (``--preset``,
models, frames, tile, seed, ``--unet-weights``, ``--no-noise``, device, dtype, attention) and
:func:`add_match_options` the matching flags (``--mutual``, ``--soft-argmax``,
``--flip-align``, ``--mask-a/--mask-b``). ``sdcorr match``, ``match --pairs``, ``extract``,
``demo`` and ``eval`` all take them from here, so a flag means the same everywhere.
:func:`resolve_args` turns the parsed flags into one :class:`~sdcorr.options.Resolved` through
the core's :func:`sdcorr.options.resolve` (checked before any model loads) and
:func:`load_pipeline` loads what it resolved. The boolean match flags come in pairs
(``--soft-argmax`` / ``--no-soft-argmax``): left out, the preset's setting holds.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import DINO_PATCHES, PRESETS, SD_STRIDES
from ..options import ATTENTIONS, MASKS, ModelOptions, Resolved, RunOptions, resolve

log = logging.getLogger("sdcorr")


# ---------------------------------------------------------------------------- value types
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


def _number(text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {text!r}") from None


# ---------------------------------------------------------------------------- the flags
def add_model_options(
    p: argparse.ArgumentParser,
    dtype_default: str | None = None,
    seed_flags: Sequence[str] = ("--seed", "--sd-seed"),
    category: bool = True,
) -> None:
    """The flags that choose and change the pipeline (values are checked by
    :func:`sdcorr.options.resolve`, which names the flag).

    Args:
        p: the parser (or argument group) to add them to.
        dtype_default: the command's default ``--dtype`` (``None``: fp16 on CUDA, else fp32).
        seed_flags: spellings of the SD-noise seed (``sdcorr eval`` keeps ``--seed`` for its
            pair sampling and takes ``--sd-seed``).
        category: add ``--category`` (the SD prompt's category).
    """
    big, finest = SD_STRIDES["s5"], DINO_PATCHES
    p.add_argument("--preset", default="sd-dino", choices=list(PRESETS), help="configuration")
    if category:
        p.add_argument(
            "--category", default=None, help='object category; SD prompt "a photo of a {category}"'
        )
    p.add_argument("--dino-model", default=None, help="DINO hub id, alias or local folder")
    p.add_argument(
        "--sd-model", default=None, help="Stable Diffusion hub id, alias or local folder"
    )
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...")
    dtype_help = f"fp32, fp16 or bf16 (default: {dtype_default or 'fp16 on CUDA, else fp32'})"
    p.add_argument("--dtype", default=dtype_default, help=dtype_help)
    p.add_argument(*seed_flags, dest="sd_seed", type=int, default=None,
                   help="seed of the fixed SD noise (default 42)")  # fmt: skip
    p.add_argument("--attention", default="sdpa", choices=ATTENTIONS, help="U-Net attention")
    p.add_argument("--sd-frame", type=int, default=None,
                   help=f"SD frame side (default 960; a multiple of {big})")  # fmt: skip
    p.add_argument("--sd-tile", type=int, default=None,
                   help=f"SD tile side (default 512; a multiple of {big}; 0: no tiles)")  # fmt: skip
    p.add_argument("--dino-frame", type=int, default=None,
                   help=f"DINO frame side (default 60 x patch: 840 for DINOv2, 960 for DINOv3;"
                        f" a multiple of {' or '.join(map(str, finest))})")  # fmt: skip
    p.add_argument("--unet-weights", default=None,
                   help="U-Net weights replacing the SD pipeline's: a file or hub repo:filename "
                        "(CleanDIFT)")  # fmt: skip
    p.add_argument("--no-noise", dest="noise", action="store_const", const=False, default=None,
                   help="feed clean latents to the U-Net (CleanDIFT; the timestep only "
                        "conditions it)")  # fmt: skip


def add_match_options(
    p: argparse.ArgumentParser, masks: bool = True, mask_files: bool = False
) -> None:
    """``--mutual``, ``--soft-argmax``, ``--flip-align`` (each with a ``--no-`` form; left out,
    the preset's setting holds) and, with ``masks``, ``--mask-a/--mask-b`` (``auto``; a PNG
    file too with ``mask_files``)."""
    flag = argparse.BooleanOptionalAction
    p.add_argument("--mutual", action=flag, default=None, help="flag mutual nearest neighbours")
    p.add_argument("--soft-argmax", action=flag, default=None,
                   help="sub-cell refinement (GeoAware; default: the preset's)")  # fmt: skip
    p.add_argument("--flip-align", action=flag, default=None,
                   help="also match from A's mirror, keep the closer (GeoAware-SC pose "
                        "alignment; default: the preset's)")  # fmt: skip
    if not masks:
        return
    kind = "PNG mask (nonzero = object) or auto (from features)" if mask_files else "auto"
    choices = None if mask_files else list(MASKS)
    p.add_argument("--mask-a", default=None, choices=choices, help=f"mask of A: {kind}")
    p.add_argument("--mask-b", default=None, choices=choices,
                   help=f"mask of B (restricts matches and the swap): {kind}")  # fmt: skip


# ---------------------------------------------------------------------------- resolution
def model_options(args: argparse.Namespace, **changes: Any) -> ModelOptions:
    """The :class:`ModelOptions` of parsed flags (``changes``: fields to replace)."""
    get = lambda name: getattr(args, name, None)  # noqa: E731 (extract has no match flags)
    opts = ModelOptions(
        preset=args.preset, dino_model=get("dino_model"), sd_model=get("sd_model"),
        sd_frame=get("sd_frame"), sd_tile=get("sd_tile"), dino_frame=get("dino_frame"),
        seed=get("sd_seed"), unet_weights=get("unet_weights"), noise=get("noise"),
        mutual=get("mutual"), soft_argmax=get("soft_argmax"), flip_align=get("flip_align"),
    )  # fmt: skip
    return replace(opts, **changes)


def run_options(args: argparse.Namespace) -> RunOptions:
    """The :class:`RunOptions` of parsed flags."""
    masks = (getattr(args, "mask_a", None), getattr(args, "mask_b", None))
    return RunOptions(device=args.device, dtype=args.dtype, attention=args.attention,
                      category=getattr(args, "category", None), masks=masks)  # fmt: skip


def resolve_args(args: argparse.Namespace, **changes: Any) -> Resolved:
    """Parsed flags → one checked :class:`Resolved` (no model is loaded)."""
    return resolve(model_options(args, **changes), run_options(args))


def load_pipeline(
    resolved: Resolved, cache_size: int = 64, cache_dir: str | Path | None = None
) -> Any:
    """Load the :class:`~sdcorr.pipeline.SDDino` of a resolution (with its feature cache)."""
    from ..pipeline import SDDino

    run = resolved.run
    return SDDino.from_pretrained(
        config=resolved.config, device=resolved.device, dtype=resolved.dtype,
        attention=run.attention, progress=log.info, cache_size=cache_size, cache_dir=cache_dir,
    )  # fmt: skip
