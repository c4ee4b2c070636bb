"""Loading the feature extractors of a resolved :class:`~sdcorr.config.PipelineConfig`.

Everything the config names (models, U-Net weights file) is located (local folder, Hugging Face
cache, download) and checked before any model is loaded (:func:`locate_models`), so a missing or
broken one fails in seconds with one line, not after minutes of loading, and every missing one
is named at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .config import PipelineConfig
from .device import resolve_device, resolve_dtype
from .hub import fetch_all, needed_for


@dataclass(frozen=True)
class Extractors:
    """The loaded branches of a pipeline and the config they resolved.

    Attributes:
        config: the config with the DINO frame the model resolved (``None`` → 60 x patch).
        sd: an :class:`~sdcorr.features.sd.SDFeatureExtractor`, or ``None``.
        dino: a :class:`~sdcorr.features.dino.ViTExtractor`, or ``None``.
        device: the device the models run on.
        dtype: their compute dtype.
    """

    config: PipelineConfig
    sd: Any
    dino: Any
    device: torch.device
    dtype: torch.dtype


def locate_models(config: PipelineConfig) -> list[Path]:
    """The local path of every model and weights file ``config`` loads (fetched if need be),
    each checked as far as it can be without loading it (:mod:`sdcorr.modelfolder`).

    Raises:
        ModelNotFoundError: one line naming every missing one, where it looked, and the one
            command that fetches them all.
        ModelLoadError, ConfigError: a broken model folder or weights file (one line).
    """
    return fetch_all(list(needed_for(config).values()), config.name)


def load_extractors(
    config: PipelineConfig,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    attention: str = "sdpa",
    channels_last: bool = False,
    compile: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Extractors:
    """Load the SD and/or DINO extractor of ``config`` (see :meth:`sdcorr.SDDino.from_pretrained`
    for the arguments)."""
    from .features.dino import ViTExtractor
    from .features.sd import SDFeatureExtractor

    cfg = config
    locate_models(cfg)  # fail on a missing or broken model before loading any
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    note = progress or (lambda _msg: None)
    sd = dino = None
    if cfg.sd is not None:
        note(f"loading Stable Diffusion ({cfg.sd.model})")
        sd = SDFeatureExtractor.from_pretrained(
            cfg.sd.model, config=cfg.sd, device=dev, dtype=dt, attention=attention
        ).optimize(channels_last=channels_last, compile=compile)
    if cfg.dino is not None:
        note(f"loading DINO ({cfg.dino.model})")
        dino = ViTExtractor.from_config(cfg.dino, device=dev, dtype=dt)
        dino.optimize(compile=compile)
        cfg = replace(cfg, dino=replace(cfg.dino, frame=dino.config.frame))  # resolved frame
    return Extractors(cfg, sd, dino, dev, dt)
