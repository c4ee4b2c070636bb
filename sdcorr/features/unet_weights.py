"""U-Net weights that replace a pipeline's ``unet/`` (e.g. CleanDIFT's noise-free U-Net).

A weights file is named by a local path (``.safetensors``, or a PyTorch ``.bin``/``.pt`` state
dict) or by a hub ``repo:filename`` (``CompVis/cleandift:cleandift_sd15_unet.safetensors``). The
state dict must be in diffusers' ``UNet2DConditionModel`` layout (CleanDIFT's U-Net files are);
it is loaded strictly, so a file of another architecture fails with one clear error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, ModelNotFoundError

log = logging.getLogger("sdcorr")


def resolve_weights(spec: str) -> Path:
    """Local path of a U-Net weights file given as a path or a hub ``repo:filename``.

    Raises:
        ModelNotFoundError: a missing local file, or a hub file that is neither cached nor
            downloadable (offline, no network, gated).
    """
    from ..hub import cache_dir, ladder

    def local() -> Path | None:
        path = Path(spec).expanduser()
        if path.is_file():
            return path
        if ":" not in spec or path.exists():
            raise ModelNotFoundError(f"U-Net weights file not found: {spec}")
        return None  # a hub repo:filename

    repo, _, filename = spec.partition(":")

    def get(local_only: bool) -> Path:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, filename, local_files_only=local_only))

    def not_found(reason: str) -> ModelNotFoundError:
        return ModelNotFoundError(
            f"U-Net weights '{spec}' are not in the Hugging Face cache ({cache_dir()}) and "
            f"{reason}; download {filename} from {repo} where the Hub is reachable and pass the "
            "file with --unet-weights PATH"
        )

    return ladder(local, get, not_found, what=spec)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a PyTorch state-dict file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)
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
