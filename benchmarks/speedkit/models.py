"""The models under test: full-size random weights from the real configs, or folders on disk.

Full size = the configs of ``stable-diffusion-v1-5`` (U-Net 859.5 M params, VAE, CLIP ViT-L/14
text encoder) and ``facebook/dinov2-base`` (``reference/cpu-timings.md`` §2). Random weights
time exactly like real ones. The CLIP tokenizer is the byte-level stand-in of
:mod:`sdcorr.testing` (the real BPE vocabulary cannot be downloaded here); the text encoder keeps
the real 49,408-token embedding, and the prompt length is padded to 77 tokens either way.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sdcorr.config import DinoConfig, SDConfig
from sdcorr.features.dino import ViTExtractor
from sdcorr.features.sd import SDFeatureExtractor

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
CLIP_L_TEXT = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
)
SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
)


@dataclass
class Models:
    """The loaded networks, shared by our extractors and the reference-procedure baseline."""

    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    scheduler: Any
    dino: nn.Module
    source: str  # "random (full-size configs)" or the folders


def build_random(seed: int = 0) -> Models:
    """Full-size SD-1.5 and DINOv2-B/14 with random weights (about 15 s, 4 GB on CPU)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, Dinov2Config, Dinov2Model

    from sdcorr.testing import _tiny_tokenizer

    tok = _tiny_tokenizer(Path(tempfile.mkdtemp(prefix="sdcorr-speed-tok-")))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        text = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT, pad_token_id=tok.pad_token_id, **ids))
        dino = Dinov2Model(Dinov2Config(attn_implementation="sdpa"))
    sched = DDPMScheduler(**SCHEDULER)
    return Models(unet, vae, text, tok, sched, dino, "random (full-size configs)")


def load_folders(sd: str | Path, dino: str | Path) -> Models:
    """Models from a diffusers SD pipeline folder and a transformers DINOv2 folder (fp32)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoModel, CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae")
    text = CLIPTextModel.from_pretrained(sd, subfolder="text_encoder")
    tok = CLIPTokenizer.from_pretrained(sd, subfolder="tokenizer")
    sched = DDPMScheduler.from_pretrained(sd, subfolder="scheduler")
    net = AutoModel.from_pretrained(dino, attn_implementation="sdpa")
    return Models(unet, vae, text, tok, sched, net, f"{sd} + {dino}")


@dataclass(frozen=True)
class Frames:
    """The frames one measurement runs at (SD frame and tile, DINO frame)."""

    sd_frame: int = 960
    sd_tile: int | None = 512
    dino_frame: int = 840

    def label(self) -> str:
        """``"sd 960/512, dino 840"``."""
        return f"sd {self.sd_frame}/{self.sd_tile or self.sd_frame}, dino {self.dino_frame}"


def extractors(
    models: Models,
    frames: Frames,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    **sd_overrides: Any,
) -> tuple[SDFeatureExtractor, ViTExtractor]:
    """Our extractors around ``models`` (cast copies only when ``dtype`` is not float32).

    The models are moved, not copied, for float32: several extractors built with different
    frames share one U-Net. ``sd_overrides`` are :class:`SDConfig` fields (``batch_size``,
    ``early_exit``...).
    """
    sd_cfg = replace(SDConfig(), frame=frames.sd_frame, tile_size=frames.sd_tile, **sd_overrides)
    dino_cfg = replace(DinoConfig(), frame=frames.dino_frame)

    def cast(m: nn.Module) -> nn.Module:
        return m if dtype == torch.float32 else cast_copy(m, dtype)

    sd = SDFeatureExtractor(
        cast(models.unet),
        cast(models.vae),
        cast(models.text_encoder),
        models.tokenizer,
        models.scheduler,
        sd_cfg,
        device,
        dtype,
    )
    return sd, ViTExtractor(cast(models.dino), dino_cfg, device, dtype)


def cast_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``module`` in ``dtype`` that never holds a second float32 set of weights."""
    import copy

    memo: dict[int, Any] = {
        id(p): nn.Parameter(p.detach().to(dtype), requires_grad=False) for p in module.parameters()
    }
    return copy.deepcopy(module, memo).to(dtype)
