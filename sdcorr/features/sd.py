"""Stable Diffusion U-Net decoder features through ``diffusers`` (forward hooks, early exit).

Reference behaviour (SD-DINO, ``reference/sd-dino.md`` §1): pad-resize to a 960 frame, four
512 tiles at offsets {0, 448}² encoded by the VAE (posterior mean × scaling factor), noised once
at t=100 with one fixed noise tensor (CPU generator, seed 42) shared by every tile, one U-Net
pass conditioned on the empty prompt (or "a photo of a {category}"), features taken at
``up_blocks[0].resnets[1]`` (s5), ``up_blocks[1].attentions[1]`` (s4) and
``up_blocks[2].attentions[1]`` (s3), tiles stitched back with overlap averaging.

Unlike the reference: all tiles of all images run as one batch (chunked by ``batch_size``), the
U-Net stops right after the last hooked module, the VAE decoder is dropped after loading, and
prompt embeddings are computed once per prompt and cached. The implicit captioner of ODISE is
not used (plain SD-1.5 weights).

CleanDIFT (``SDConfig.unet_weights`` + ``SDConfig.noise=False``): the pipeline's U-Net weights
are replaced by a noise-free fine-tune and the clean latents go in unnoised, the timestep only
conditioning the U-Net (CleanDIFT's GeoAware-SC evaluation uses t=261).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..config import SDConfig
from ..device import resolve_device, resolve_dtype
from ..errors import ConfigError
from ..hub import resolve_model
from ..image import ImageLike, prepare_image
from ..types import FeatureMap
from .accel import cpu_or, prefers_channels_last, to_channels_last
from .hooks import capture

log = logging.getLogger("sdcorr")


class SDFeatureExtractor:
    """Multi-layer SD U-Net features of images on a square pad-resized frame.

    Args:
        unet: ``UNet2DConditionModel``.
        vae: ``AutoencoderKL`` (its decoder is dropped).
        text_encoder: CLIP text model whose ``last_hidden_state`` conditions the U-Net.
        tokenizer: the matching CLIP tokenizer.
        scheduler: a diffusers scheduler with ``add_noise`` (DDPM, scaled-linear betas).
        config: frame, tiling, timestep, layers, prompt and seed.
        device: torch device of the models.
        dtype: compute dtype of U-Net, VAE and text encoder (outputs are float32).
    """

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        scheduler: Any,
        config: SDConfig | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.config = config or SDConfig()
        self.device, self.dtype = torch.device(device), dtype
        vae.decoder = None  # never used: features come from the encoder side only
        vae.post_quant_conv = None
        self.unet = _place(unet, self.device, dtype)
        self.vae = _place(vae, self.device, dtype)
        self.text_encoder = _place(text_encoder, self.device, dtype)
        self.channels_last = False
        self.set_channels_last(prefers_channels_last(self.device))
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self._prompt_cache: dict[str, torch.Tensor] = {}
        self._noise_cache: dict[tuple[int, int], torch.Tensor] = {}
        self.modules = {name: self.unet.get_submodule(path) for name, path in self.config.layers}
        self.strides = self._layer_strides()
        self.offsets = tile_offsets(self.config.frame, self.tile, self.config.tile_overlap)
        self._validate()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
        *,
        config: SDConfig | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        attention: str = "sdpa",
        revision: str | None = None,
        **overrides: Any,
    ) -> SDFeatureExtractor:
        """Load an SD pipeline folder (hub id, alias or local path) for feature extraction.

        Args:
            model: the diffusers pipeline (``unet/``, ``vae/``, ``text_encoder/``,
                ``tokenizer/``, ``scheduler/``).
            config: base config; ``model`` and ``overrides`` (any :class:`SDConfig` field)
                replace its fields.
            device: ``"auto"`` picks cuda, mps, then cpu.
            dtype: ``None`` is fp16 on CUDA and fp32 elsewhere.
            attention: ``"sdpa"`` (PyTorch scaled-dot-product, default) or ``"xformers"``
                (used when installed, else a warning and SDPA).
        """
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        cfg = replace(config or SDConfig(), model=model, **overrides)
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        path = resolve_model(cfg.model, "sd", revision)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dt)
        if cfg.unet_weights:
            from .unet_weights import load_unet_weights

            load_unet_weights(unet, cfg.unet_weights)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dt)
        text = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=dt)
        tok = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        sched = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        ext = cls(unet, vae, text, tok, sched, cfg, dev, dt)
        if attention == "xformers":
            ext.enable_xformers()
        elif attention != "sdpa":
            raise ConfigError(f"unknown attention '{attention}' (valid: sdpa, xformers)")
        return ext

    def enable_xformers(self) -> bool:
        """Use xFormers attention in the U-Net if it is installed; return whether it is used."""
        try:
            import xformers  # noqa: F401

            self.unet.enable_xformers_memory_efficient_attention()
            return True
        except (ImportError, ModuleNotFoundError, ValueError, RuntimeError) as err:
            log.warning("xFormers requested but unavailable (%s); using PyTorch SDPA", err)
            return False

    def set_channels_last(self, on: bool) -> None:
        """Store the U-Net and VAE conv weights channels-last (``on``) or plain, in place; the
        convolutions then compute in that layout. Default: on for CPU, off elsewhere."""
        to_channels_last(self.unet, on)
        to_channels_last(self.vae, on)
        self.channels_last = on

    def optimize(
        self,
        channels_last: bool | None = None,
        compile: bool = False,
        backend: str | None = None,
    ) -> SDFeatureExtractor:
        """Speed switches (same features up to rounding); returns ``self``.

        Args:
            channels_last: channels-last conv weights (:meth:`set_channels_last`; faster on
                CPU, where it is the default, and on CUDA tensor cores); ``None`` keeps the
                current layout.
            compile: ``torch.compile`` the U-Net and VAE blocks (hooked modules stay eager).
            backend: ``torch.compile`` backend (``None``: inductor).
        """
        from .accel import compile_blocks

        if channels_last is not None:
            self.set_channels_last(channels_last)
        if compile:
            compile_blocks(self.unet, self.modules.values(), backend=backend)
            compile_blocks(self.vae, backend=backend)
        return self

    # ------------------------------------------------------------------ set-up
    @property
    def tile(self) -> int:
        """Side of the square the U-Net sees (the tile, or the whole frame)."""
        return self.config.tile_size or self.config.frame

    def _layer_strides(self) -> dict[str, int]:
        """Frame pixels per feature cell of each hooked layer (probed on a tiny latent)."""
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        unet_down = 2 ** (len(self.unet.config.block_out_channels) - 1)
        side = unet_down  # smallest latent the U-Net accepts
        x = torch.zeros(1, self.unet.config.in_channels, side, side, device=self.device)
        ctx = torch.zeros(1, 1, self.unet.config.cross_attention_dim, device=self.device)
        with torch.inference_mode():
            out = capture(
                lambda: self.unet(x.to(self.dtype), 0, encoder_hidden_states=ctx.to(self.dtype)),
                self.modules,
            )
        return {name: down * side // t.shape[-1] for name, t in out.items()}

    def _validate(self) -> None:
        cfg, tile = self.config, self.tile
        big = max(self.strides.values())
        if tile > cfg.frame:
            raise ConfigError(f"tile_size {tile} is larger than the frame {cfg.frame}")
        for v, what in (
            (cfg.frame, "frame"),
            (tile, "tile_size"),
            *((o, "tile offset") for o in self.offsets),
        ):
            if v % big:
                raise ConfigError(f"{what} {v} must be a multiple of {big} (coarsest layer stride)")

    # ------------------------------------------------------------------ pieces
    def prompt_for(self, category: str | None) -> str:
        """The prompt used for an image of ``category`` (config ``prompt`` wins)."""
        if self.config.prompt is not None:
            return self.config.prompt
        return self.config.prompt_template.format(category=category) if category else ""

    @torch.inference_mode()
    def prompt_embedding(self, prompt: str) -> torch.Tensor:
        """``(1, L, D)`` text-encoder ``last_hidden_state`` of ``prompt`` (cached)."""
        if prompt not in self._prompt_cache:
            ids = self.tokenizer(
                prompt,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            self._prompt_cache[prompt] = self.text_encoder(ids)[0]
        return self._prompt_cache[prompt]

    def noise(self, h: int, w: int) -> torch.Tensor:
        """The fixed ``(1, 4, h, w)`` noise (CPU generator seeded with ``config.seed``)."""
        if (h, w) not in self._noise_cache:
            g = torch.Generator().manual_seed(self.config.seed)
            c = self.unet.config.in_channels
            self._noise_cache[(h, w)] = torch.randn(1, c, h, w, generator=g)
        return self._noise_cache[(h, w)]

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels ``(N, 3, T, T)`` in ``[0, 1]`` → VAE mean × scaling factor ``(N, 4, T/8, T/8)``."""
        x = (pixels.to(self.device, self.dtype) - 0.5) / 0.5
        step = max(1, self.config.vae_batch_size or cpu_or(self.device, 1, 4))
        means = [self.vae.encode(x[i : i + step]).latent_dist.mean for i in range(0, len(x), step)]
        return torch.cat(means) * self.vae.config.scaling_factor

    @torch.inference_mode()
    def unet_features(
        self, latents: torch.Tensor, context: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Noise latents at ``config.timestep`` (clean latents when ``config.noise`` is off, the
        timestep then only conditions the U-Net); return the hooked maps ``{name: (N, C, h, w)}``."""
        n, _, h, w = latents.shape
        t = torch.full((n,), self.config.timestep, device=self.device, dtype=torch.long)
        noisy = latents
        if self.config.noise:
            noise = self.noise(h, w).to(self.device, latents.dtype).expand_as(latents)
            noisy = self.scheduler.add_noise(latents, noise, t)
        return capture(
            lambda: self.unet(noisy, t, encoder_hidden_states=context),
            self.modules,
            early_exit=self.config.early_exit,
        )

    def tiles(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, F, F)`` frames → ``(B * n_tiles, 3, T, T)`` tiles (image-major)."""
        t = self.tile
        crops = [pixels[:, :, y : y + t, x : x + t] for y in self.offsets for x in self.offsets]
        return torch.stack(crops, dim=1).flatten(0, 1)

    def stitch(self, tiles: torch.Tensor, stride: int) -> torch.Tensor:
        """Tile maps ``(B * n_tiles, C, t, t)`` → ``(B, C, F/stride, F/stride)``, overlaps averaged."""
        n_tiles = len(self.offsets) ** 2
        b, c = tiles.shape[0] // n_tiles, tiles.shape[1]
        side, t = self.config.frame // stride, tiles.shape[-1]
        out = tiles.new_zeros(b, c, side, side)
        count = tiles.new_zeros(1, 1, side, side)
        tiles = tiles.view(b, n_tiles, c, t, t)
        k = 0
        for y in self.offsets:
            for x in self.offsets:
                ys, xs = y // stride, x // stride
                out[:, :, ys : ys + t, xs : xs + t] += tiles[:, k]
                count[:, :, ys : ys + t, xs : xs + t] += 1
                k += 1
        return out / count

    # ------------------------------------------------------------------ main entry
    def extract_pixels(
        self, pixels: torch.Tensor, prompts: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Framed pixels ``(B, 3, F, F)`` in ``[0, 1]`` → ``{name: (B, C, F/s, F/s)}`` float32."""
        tiles = self.tiles(pixels)
        n_tiles = len(self.offsets) ** 2
        embs = [self.prompt_embedding(p) for p in prompts]
        context = torch.cat([e.expand(n_tiles, -1, -1) for e in embs])
        bs = max(1, self.config.batch_size)
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.modules}
        for i in range(0, len(tiles), bs):
            latents = self.encode(tiles[i : i + bs])
            for name, f in self.unet_features(latents, context[i : i + bs]).items():
                parts[name].append(f.float())
        return {n: self.stitch(torch.cat(p), self.strides[n]) for n, p in parts.items()}

    def __call__(
        self,
        images: Sequence[ImageLike] | ImageLike,
        category: str | Sequence[str | None] | None = None,
    ) -> dict[str, FeatureMap]:
        """Features of one image or a list.

        Args:
            images: anything :func:`sdcorr.image.load_image` accepts, or a list of them.
            category: one category for all images, or one per image (``None``: empty prompt).

        Returns:
            ``{"s3": FeatureMap, "s4": ..., "s5": ...}`` (float32, on the model's device); at
            the default 960 frame their grids are 60x60 (640 ch), 30x30 (1280 ch) and 15x15
            (1280 ch) for SD-1.5.
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        cats = category if isinstance(category, (list, tuple)) else [category] * len(images)
        if len(cats) != len(images):
            raise ConfigError(f"{len(cats)} categories for {len(images)} images")
        prepared = [prepare_image(im, self.config.frame) for im in images]
        pixels = torch.stack([p.pixels for p in prepared])
        maps = self.extract_pixels(pixels, [self.prompt_for(c) for c in cats])
        out = {}
        for name, f in maps.items():
            geos = tuple(p.geometry.with_grid(self.strides[name]) for p in prepared)
            out[name] = FeatureMap(f, geos)
        return out


def _place(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move a model to ``device``/``dtype`` (no cast when it already has that dtype), eval mode."""
    p = next(module.parameters())
    if p.dtype != dtype:
        module = module.to(dtype=dtype)
    return module.to(device).eval()


def tile_offsets(frame: int, tile: int | None, overlap: int = 0) -> list[int]:
    """Start offsets along one axis of square tiles covering ``frame``.

    Tiles step by ``tile - overlap``; the last is shifted back to end at the border
    (960 frame, 512 tiles → ``[0, 448]``). ``tile=None`` or ``tile >= frame`` gives ``[0]``.
    """
    if tile is None or tile >= frame:
        return [0]
    step = tile - overlap
    if step <= 0:
        raise ConfigError(f"tile_overlap {overlap} must be smaller than tile_size {tile}")
    n = math.ceil((frame - tile) / step) + 1
    return [min(i * step, frame - tile) for i in range(n)]
