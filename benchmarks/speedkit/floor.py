"""The compute floor, counted without computing: the models rebuilt on the ``meta`` device.

Floor of one image = VAE encoder + U-Net up to the last hooked module + DINOv2 up to the
hooked block, once. Two variants: ``tiled`` (the faithful default: every tile of the frame
through VAE encoder and U-Net, as the reference tiling requires) and ``single_pass`` (the
whole SD frame as one latent, what an untiled configuration would cost). Text encoding,
stitching, fusion and matching are not part of the floor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sdcorr.features.hooks import capture

from .clock import flop_counter
from .models import Frames


def _meta_copy(module: nn.Module) -> nn.Module:
    """The same architecture on the meta device (diffusers ``from_config``, else ``cls(config)``)."""
    with torch.device("meta"):
        if hasattr(type(module), "from_config"):
            return type(module).from_config(module.config)
        return type(module)(module.config)


def _count(run: Any) -> int:
    with torch.inference_mode(), flop_counter() as fc:
        run()
    return int(fc.get_total_flops())


def floor_flops(
    unet: nn.Module,
    vae: nn.Module,
    dino: nn.Module,
    sd_layers: tuple[tuple[str, str], ...],
    dino_layer: int,
    frames: Frames,
    n_tiles: int,
) -> dict[str, Any]:
    """FLOPs per image of the floor: ``{"tiled": {...}, "single_pass": {...}}`` per stage."""
    unet, vae, dino = _meta_copy(unet), _meta_copy(vae), _meta_copy(dino)
    hooked = {name: unet.get_submodule(path) for name, path in sd_layers}
    ctx_dim = unet.config.cross_attention_dim
    down = 2 ** (len(vae.config.block_out_channels) - 1)

    def sd(n: int, side: int) -> dict[str, int]:
        x = torch.zeros(n, 3, side, side, device="meta")
        lat = torch.zeros(n, unet.config.in_channels, side // down, side // down, device="meta")
        ctx = torch.zeros(n, 77, ctx_dim, device="meta")
        t = torch.full((n,), 100, device="meta", dtype=torch.long)
        return {
            "vae_encode": _count(lambda: vae.encode(x).latent_dist.mean),
            "unet": _count(lambda: capture(lambda: unet(lat, t, ctx), hooked, early_exit=True)),
        }

    px = torch.zeros(1, 3, frames.dino_frame, frames.dino_frame, device="meta")
    block = {"f": dino.encoder.layer[dino_layer]}
    d = _count(lambda: capture(lambda: dino(pixel_values=px), block, early_exit=True))
    tile = frames.sd_tile or frames.sd_frame
    out = {"tiled": {**sd(n_tiles, tile), "dino": d}}
    out["single_pass"] = {**sd(1, frames.sd_frame), "dino": d}
    for v in out.values():
        v["total"] = sum(v.values())
    return out
