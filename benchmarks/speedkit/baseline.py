"""The reference SD-DINO *procedure* (``reference/sd-dino.md`` §0-1), driving the same models.

A separate, plain implementation of how the reference code spends its time, not of its code:
each image on its own, each 512 tile on its own (batch 1), a text-encoder call per tile (no
prompt cache), VAE encode, the VAE decoder run as the reference's LDM wrapper does (its output
is unused), the **full** U-Net forward (no early exit) with plain forward hooks catching the
three decoder features, then DINOv2 with ``output_hidden_states=True``. Every pair re-extracts
both images. Float32 throughout. The VAE decoder is built from the VAE config with random
weights when our extractor has dropped it (it only costs time; its output is discarded).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sdcorr.features.dino import IMAGENET_MEAN, IMAGENET_STD, ViTExtractor
from sdcorr.features.sd import SDFeatureExtractor
from sdcorr.image import ImageLike, prepare_image
from sdcorr.pipeline import ImageFeatures
from sdcorr.types import FeatureMap


def build_decoder(vae: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(post_quant_conv, decoder)`` of ``vae``, rebuilt from its config if they were dropped."""
    if getattr(vae, "decoder", None) is not None and vae.post_quant_conv is not None:
        return vae.post_quant_conv, vae.decoder
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = AutoencoderKL.from_config(vae.config)
    p = next(vae.parameters())
    fresh = fresh.to(p.device, p.dtype).eval()
    return fresh.post_quant_conv, fresh.decoder


class ReferenceProcedure:
    """Per-image, per-tile, uncached, full-forward extraction with the extractors' models.

    Args:
        sd: our SD extractor (only its models, config and fixed noise are used).
        dino: our DINO extractor (only its model and config are used).
        decoder: ``(post_quant_conv, decoder)`` run per tile as the reference does (see
            :func:`build_decoder`), or ``None`` to skip it.
    """

    def __init__(
        self,
        sd: SDFeatureExtractor,
        dino: ViTExtractor,
        decoder: tuple[nn.Module, nn.Module] | None = None,
    ) -> None:
        self.sd, self.dino = sd, dino
        self.cfg = sd.config
        self.decoder = decoder
        self.layer_modules = {name: sd.unet.get_submodule(path) for name, path in self.cfg.layers}

    # ------------------------------------------------------------------ SD
    @torch.inference_mode()
    def text(self, prompt: str) -> torch.Tensor:
        """One text-encoder call (the reference encodes the caption of every crop)."""
        sd = self.sd
        ids = sd.tokenizer(
            prompt,
            padding="max_length",
            max_length=sd.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(sd.device)
        return sd.text_encoder(ids)[0]

    @torch.inference_mode()
    def tile_features(self, tile: torch.Tensor, prompt: str) -> dict[str, torch.Tensor]:
        """One ``(1, 3, T, T)`` tile in ``[0, 1]`` → ``{name: (1, C, h, w)}`` float32."""
        sd = self.sd
        context = self.text(prompt)
        x = (tile.to(sd.device, sd.dtype) - 0.5) / 0.5
        latent = sd.vae.encode(x).latent_dist.mean * sd.vae.config.scaling_factor
        if self.decoder is not None:
            post, dec = self.decoder
            dec(post(latent / sd.vae.config.scaling_factor))
        t = torch.tensor([self.cfg.timestep], device=sd.device)
        noise = sd.noise(*latent.shape[-2:]).to(sd.device, latent.dtype)
        noisy = sd.scheduler.add_noise(latent, noise, t)
        caught: dict[str, torch.Tensor] = {}
        handles = [
            m.register_forward_hook(lambda _m, _a, out, n=name: caught.__setitem__(n, _first(out)))
            for name, m in self.layer_modules.items()
        ]
        try:
            sd.unet(noisy, t, encoder_hidden_states=context)
        finally:
            for h in handles:
                h.remove()
        return {n: f.float() for n, f in caught.items()}

    def sd_features(self, pixels: torch.Tensor, prompt: str) -> dict[str, torch.Tensor]:
        """Framed pixels ``(1, 3, F, F)`` → stitched ``{name: (1, C, F/s, F/s)}``."""
        tile, frame = self.sd.tile, self.cfg.frame
        offsets = self.sd.offsets
        canvas: dict[str, torch.Tensor] = {}
        count: dict[str, torch.Tensor] = {}
        for y in offsets:
            for x in offsets:
                feats = self.tile_features(pixels[:, :, y : y + tile, x : x + tile], prompt)
                for name, f in feats.items():
                    s = tile // f.shape[-1]
                    if name not in canvas:
                        canvas[name] = f.new_zeros(1, f.shape[1], frame // s, frame // s)
                        count[name] = f.new_zeros(1, 1, frame // s, frame // s)
                    sl = (
                        ...,
                        slice(y // s, y // s + f.shape[-2]),
                        slice(x // s, x // s + f.shape[-1]),
                    )
                    canvas[name][sl] += f
                    count[name][sl] += 1
        return {n: canvas[n] / count[n] for n in canvas}

    # ------------------------------------------------------------------ DINO
    @torch.inference_mode()
    def dino_features(self, image: ImageLike) -> torch.Tensor:
        """``(1, 768, n, n)``: ``hidden_states[layer + 1]`` without CLS (no hooks)."""
        d = self.dino
        pixels = prepare_image(image, d.config.frame).pixels[None]
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x = ((pixels - mean) / std).to(d.device, d.dtype)
        out = d.model(pixel_values=x, output_hidden_states=True)
        tokens = out.hidden_states[d.config.layer + 1][:, d.num_prefix :].float()
        n = (d.config.frame - d.patch) // d.stride + 1
        return tokens.transpose(1, 2).reshape(1, -1, n, n)

    # ------------------------------------------------------------------ one image
    def extract(self, image: ImageLike, category: str | None = None) -> ImageFeatures:
        """Raw features of one image, the reference way (same keys as ``SDDino.extract``)."""
        prepared = prepare_image(image, self.cfg.frame)
        sd = self.sd_features(prepared.pixels[None], self.sd.prompt_for(category))
        maps: dict[str, FeatureMap] = {}
        for name, f in sd.items():
            geo = prepared.geometry.with_grid(self.cfg.frame // f.shape[-1])
            maps[name] = FeatureMap(f.cpu(), (geo,))
        dino = self.dino_features(image)
        w, h = prepared.geometry.width, prepared.geometry.height
        maps["dino"] = FeatureMap(dino.cpu(), (self.dino.geometry(w, h),))
        return ImageFeatures(maps)


def _first(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return _first(out[0])
    return out.sample
