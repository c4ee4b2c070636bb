"""U-Net weights that replace a pipeline's ``unet/`` (e.g. CleanDIFT's noise-free U-Net).

A weights file is named by a local path (a ``.safetensors`` file, or a PyTorch state dict saved
by ``torch.save``, e.g. a ``.bin``) or by a hub ``repo:filename``
(``CompVis/cleandift:cleandift_sd15_unet.safetensors``). :func:`check_spec` (the name) and
:func:`sdcorr.modelfolder.check_weights_file` (the file: readable, safetensors with a complete
header, or a ``torch.save`` zip whose pickle refers to nothing but tensors and plain containers)
run before any model loads; :func:`read_state_dict` then reads it with nothing unpickled that
could run code (``torch.load(weights_only=True)``). The state dict must be in diffusers'
``UNet2DConditionModel`` layout (CleanDIFT's U-Net files are); it is loaded strictly, so a file of
another architecture fails with one clear error.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..modelfolder import check_weights_file, is_torch_zip

log = logging.getLogger("sdcorr")

OPTION = "--unet-weights"
# a hub repo:filename: ``org/name:path/in/repo`` (hub names: letters, digits, ``-_.``)
HUB_FILE = re.compile(r"[\w.-]+/[\w.-]+:[^:\s]+")


def check_spec(spec: str) -> None:
    """Raise a one-line error unless ``spec`` is an existing, usable weights file
    (:func:`sdcorr.modelfolder.check_weights_file`) or has the form of a hub ``repo:filename``
    (no network, no model)."""
    path = Path(spec).expanduser()
    if path.exists():
        check_weights_file(path, OPTION)
    elif not HUB_FILE.fullmatch(spec):
        raise ConfigError(
            f"{OPTION} {spec}: no such file, and not a hub repo:filename"
            " (e.g. CompVis/cleandift:cleandift_sd15_unet.safetensors)"
        )


def resolve_weights(spec: str) -> Path:
    """Local path of a U-Net weights file given as a path or a hub ``repo:filename``.

    Raises:
        ModelNotFoundError: a missing local file, or a hub file that is neither cached nor
            downloadable (offline, no network, gated).
    """
    from ..hub import fetch_all, weights_needed

    return fetch_all([weights_needed(spec)])[0]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a ``torch.save`` state-dict file (checked
    first; read with ``torch.load(weights_only=True)``)."""
    check_weights_file(path, OPTION)
    try:
        if is_torch_zip(path):
            sd = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            sd = load_file(str(path))
    except Exception as err:
        raise ConfigError(f"cannot read U-Net weights {path}: {type(err).__name__}") from None
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ConfigError(f"U-Net weights {path} do not hold a state dict")
    return sd


def load_unet_weights(unet: nn.Module, spec: str) -> nn.Module:
    """Replace ``unet``'s parameters with those of ``spec`` (strict, same keys and shapes)."""
    path = resolve_weights(spec)
    state = read_state_dict(path)
    try:
        unet.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0] if first else ""
        raise ConfigError(
            f"U-Net weights {path} do not fit the pipeline's U-Net ({detail[:160]})"
        ) from None
    log.info("U-Net weights replaced from %s", path)
    return unet
