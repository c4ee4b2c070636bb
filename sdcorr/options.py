"""What a user may change about a preset, checked and resolved into one ``PipelineConfig``.

Every way in (``sdcorr match``, ``match --pairs``, ``extract``, ``demo``, ``eval``, a Python
caller) states what it was asked as :class:`ModelOptions` and :class:`RunOptions`, and
:func:`resolve` turns them, once and before any model loads, into a :class:`Resolved`: the one
:class:`~sdcorr.config.PipelineConfig` the run reads, plus the device, dtype and run options.
A preset's own settings (``geoaware``'s soft-argmax and flip alignment, ``cleandift``'s U-Net)
hold unless an option changes them (``None`` keeps a setting). The checks here need no command
line; their one-line :class:`~sdcorr.errors.ConfigError` names the option as the command line
spells it (:data:`FLAGS`). An option for a branch the preset does not have is never ignored in
silence: ``--unet-weights`` and ``--no-noise`` (which change what the SD branch computes) are
refused, the other SD or DINO options draw a warning (:func:`check_branches`).

Example:
    >>> r = resolve(ModelOptions(preset="geoaware", soft_argmax=False, sd_tile=0))
    >>> r.config.match.soft_argmax, r.config.match.flip_align, r.config.sd.tile_size
    (False, True, None)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import torch

from .config import (
    DEFAULT_GRID,
    DINO_PATCHES,
    PRESETS,
    SD_STRIDES,
    PipelineConfig,
    get_preset,
    with_models,
)
from .device import resolve_device, resolve_dtype
from .errors import ConfigError, ImageLoadError

log = logging.getLogger("sdcorr")

#: How the command line spells each option (error messages name options this way).
FLAGS = {
    "preset": "--preset", "dino_model": "--dino-model", "sd_model": "--sd-model",
    "sd_frame": "--sd-frame", "sd_tile": "--sd-tile", "dino_frame": "--dino-frame",
    "seed": "--seed", "unet_weights": "--unet-weights", "noise": "--no-noise",
    "mutual": "--mutual", "soft_argmax": "--soft-argmax", "flip_align": "--flip-align",
    "device": "--device", "dtype": "--dtype", "attention": "--attention",
}  # fmt: skip
# the options of each branch (a preset without that branch cannot use them)
SD_OPTIONS = ("unet_weights", "noise", "sd_model", "sd_frame", "sd_tile", "seed")
DINO_OPTIONS = ("dino_model", "dino_frame")
REFUSED = ("unet_weights", "noise")  # they change what the SD branch computes: never ignored
ATTENTIONS = ("sdpa", "xformers")
MASKS = ("auto",)  # the mask every entry point accepts; sdcorr match also takes a PNG file


@dataclass(frozen=True)
class ModelOptions:
    """Changes to a preset's models, extraction and matching (``None``: keep the preset's).

    Attributes:
        preset: a name of :data:`sdcorr.config.PRESETS`.
        dino_model: hub id, alias or local folder replacing the preset's DINO model.
        sd_model: hub id, alias or local folder replacing the preset's SD pipeline.
        sd_frame: SD frame side (a positive multiple of the coarsest SD stride, 64).
        sd_tile: SD tile side (a multiple of 64, at most the frame; 0: no tiles).
        dino_frame: DINO frame side (a positive multiple of a DINO patch, 14 or 16).
        seed: seed of the fixed SD noise.
        unet_weights: U-Net weights replacing the SD pipeline's (file or hub ``repo:file``).
        noise: ``False`` feeds clean latents to the U-Net (CleanDIFT).
        mutual: flag mutual nearest neighbours.
        soft_argmax: sub-cell refinement by a windowed soft-argmax.
        flip_align: also match from A's mirror and keep the closer view.
    """

    preset: str = "sd-dino"
    dino_model: str | None = None
    sd_model: str | None = None
    sd_frame: int | None = None
    sd_tile: int | None = None
    dino_frame: int | None = None
    seed: int | None = None
    unet_weights: str | None = None
    noise: bool | None = None
    mutual: bool | None = None
    soft_argmax: bool | None = None
    flip_align: bool | None = None


@dataclass(frozen=True)
class RunOptions:
    """How and on what a run computes (not part of the pipeline config).

    Attributes:
        device: ``auto`` (cuda, mps, cpu), ``cpu``, ``cuda``, ``cuda:1``, ...
        dtype: ``fp32``, ``fp16``, ``bf16`` (``None``: fp16 on CUDA, else fp32).
        attention: the U-Net's attention, ``sdpa`` or ``xformers``.
        category: the SD prompt's category ("a photo of a {category}"; ``None``: empty prompt).
        masks: ``(mask_a, mask_b)``: ``"auto"``, a mask file (``sdcorr match`` only) or ``None``.
    """

    device: str = "auto"
    dtype: str | None = None
    attention: str = "sdpa"
    category: str | None = None
    masks: tuple[str | None, str | None] = (None, None)


@dataclass(frozen=True)
class Resolved:
    """The outcome of :func:`resolve`: what a run reads, all checked.

    Attributes:
        config: the one pipeline config (preset + options).
        run: the run options as given.
        device: the resolved torch device.
        dtype: the resolved compute dtype.
        options: the model options as given (e.g. to resolve another preset the same way).
    """

    config: PipelineConfig
    run: RunOptions
    device: torch.device
    dtype: torch.dtype
    options: ModelOptions = field(default_factory=ModelOptions)


def resolve(model: ModelOptions, run: RunOptions | None = None) -> Resolved:
    """Check the options and build the pipeline config (no model is loaded).

    Raises:
        ConfigError: an unknown preset, device, dtype or attention, or a value that cannot
            work (one line naming the option).
    """
    run = run or RunOptions()
    check_values(model)
    preset = get_preset(model.preset)
    check_branches(preset, model)
    if model.unet_weights is not None:
        from .features.unet_weights import check_spec

        check_spec(model.unet_weights)
    cfg = check_frames(apply(preset, model))
    if run.attention not in ATTENTIONS:
        raise ConfigError(f"{FLAGS['attention']} must be one of {', '.join(ATTENTIONS)}")
    device = resolve_device(run.device)
    return Resolved(cfg, run, device, resolve_dtype(run.dtype, device), model)


def check_values(opts: ModelOptions) -> None:
    """Raise :class:`ConfigError`, naming the option, for a frame or tile side that cannot work."""
    big = SD_STRIDES["s5"]
    patches = " or ".join(f"{p}" for p in DINO_PATCHES)
    if opts.sd_frame is not None and (opts.sd_frame < big or opts.sd_frame % big):
        raise ConfigError(
            f"{FLAGS['sd_frame']} must be a positive multiple of {big}, got {opts.sd_frame}"
        )
    if opts.sd_tile is not None and (opts.sd_tile < 0 or opts.sd_tile % big):
        raise ConfigError(
            f"{FLAGS['sd_tile']} must be 0 (no tiles) or a positive multiple of {big},"
            f" got {opts.sd_tile}"
        )
    frame = opts.dino_frame
    if frame is not None and (frame <= 0 or all(frame % p for p in DINO_PATCHES)):
        raise ConfigError(
            f"{FLAGS['dino_frame']} must be positive and a multiple of a DINO patch ({patches}:"
            f" DINOv2, DINOv3), got {frame}"
        )


def check_branches(preset: PipelineConfig, opts: ModelOptions) -> None:
    """Refuse ``--unet-weights``/``--no-noise`` for a preset without Stable Diffusion (one
    line); warn about any other SD or DINO option given for a preset without that branch."""
    given = _unused(preset, opts)
    unused = [name for name in given if name not in REFUSED]
    refused = [name for name in given if name in REFUSED]
    if refused:
        flags = " and ".join(FLAGS[name] for name in refused)
        raise ConfigError(
            f"{flags}: preset '{preset.name}' has no Stable Diffusion branch to apply"
            f" {'them' if len(refused) > 1 else 'it'} to; choose a preset with SD"
            f" ({', '.join(n for n, c in PRESETS.items() if c.sd is not None)})"
        )
    for name in unused:
        branch = "Stable Diffusion" if name in SD_OPTIONS else "DINO"
        log.warning(
            "warning: %s is not used: preset '%s' has no %s branch", FLAGS[name], preset.name,
            branch,
        )  # fmt: skip


def for_preset(opts: ModelOptions, preset: str) -> ModelOptions:
    """``opts`` for another ``preset``, without the options of branches that preset lacks
    (the demo page's preset switch: the command line's options apply where they can)."""
    opts = replace(opts, preset=preset)
    return replace(opts, **dict.fromkeys(_unused(get_preset(preset), opts)))


def _unused(preset: PipelineConfig, opts: ModelOptions) -> list[str]:
    """The options set in ``opts`` whose branch ``preset`` does not have."""
    names = (SD_OPTIONS if preset.sd is None else ()) + (
        DINO_OPTIONS if preset.dino is None else ()
    )
    return [name for name in names if getattr(opts, name) is not None]


def apply(cfg: PipelineConfig, opts: ModelOptions) -> PipelineConfig:
    """``cfg`` with every option that is set (not ``None``) applied; the rest of it kept."""
    cfg = with_models(cfg, sd_model=opts.sd_model, dino_model=opts.dino_model)
    if cfg.sd is not None:
        sd = {"seed": opts.seed, "frame": opts.sd_frame, "unet_weights": opts.unet_weights,
              "noise": opts.noise}  # fmt: skip
        sd = {k: v for k, v in sd.items() if v is not None}
        if opts.sd_tile is not None:
            sd["tile_size"] = opts.sd_tile or None  # 0: the whole frame at once
        cfg = replace(cfg, sd=replace(cfg.sd, **sd))
    if cfg.dino is not None and opts.dino_frame is not None:
        cfg = replace(cfg, dino=replace(cfg.dino, frame=opts.dino_frame))
    match = {"mutual": opts.mutual, "soft_argmax": opts.soft_argmax,
             "flip_align": opts.flip_align}  # fmt: skip
    given = {k: v for k, v in match.items() if v is not None}
    return replace(cfg, match=replace(cfg.match, **given)) if given else cfg


def check_frames(cfg: PipelineConfig) -> PipelineConfig:
    """Raise :class:`ConfigError`, naming the option, when the SD tile does not fit the frame."""
    sd = cfg.sd
    if sd is not None and sd.tile_size is not None and sd.tile_size > sd.frame:
        raise ConfigError(
            f"{FLAGS['sd_tile']} {sd.tile_size} is larger than the SD frame {sd.frame}"
            f" ({FLAGS['sd_frame']})"
        )
    return cfg


def check_fits(cfg: PipelineConfig, size: tuple[int, int], name: str) -> None:
    """Raise :class:`ImageLoadError` when an image of ``size = (w, h)`` is too thin to cover one
    feature cell in a model frame (all of its cells would be padding)."""
    w, h = size
    frames = []
    if cfg.dino is not None:
        frame = cfg.dino.frame or DEFAULT_GRID * DINO_PATCHES[0]  # None: 60 cells (840, DINOv2)
        frames.append((frame, DINO_PATCHES[0], "DINO", FLAGS["dino_frame"]))
    if cfg.sd is not None:
        frames.append((cfg.sd.frame, SD_STRIDES["s3"], "SD", FLAGS["sd_frame"]))
    for frame, cell, what, flag in frames:
        short = round(frame * min(w, h) / max(w, h))
        if short < cell:
            raise ImageLoadError(
                f"{name} is {w}x{h}: in the {frame}-px {what} frame its short side is {short} px,"
                f" less than one {cell}-px feature cell; crop it or raise {flag}"
            )
