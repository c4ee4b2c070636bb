"""Tiny random-weight models written to folders, for tests and offline demos.

The folders have the exact layout of the real checkpoints (a transformers DINOv2 folder; a
diffusers Stable Diffusion pipeline folder with ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/`` and ``scheduler/``), so they load through the same ``from_pretrained`` code as
real weights. They are built from configs in about a second on CPU and carry no meaning: the
features they give are random but deterministic.

Example:
    >>> paths = save_tiny_models("/tmp/sdcorr-tiny")  # doctest: +SKIP
    >>> # sdcorr match a.jpg b.jpg --dino-model /tmp/sdcorr-tiny/dino --sd-model /tmp/sdcorr-tiny/sd
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

TINY_DINO = dict(
    hidden_size=32,
    num_hidden_layers=12,
    num_attention_heads=2,
    mlp_ratio=2,
    patch_size=14,
    image_size=56,
)
TINY_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(16, 16, 32, 32),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=8,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=1,
    block_out_channels=(8, 8, 16, 16),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=8,
    sample_size=512,
    scaling_factor=0.18215,
)
TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
)


def save_tiny_models(root: str | Path | None = None, seed: int = 0) -> dict[str, Path]:
    """Write a tiny DINOv2 and a tiny SD-1.5-shaped pipeline under ``root``.

    Args:
        root: folder to write (created; a temporary folder when ``None``).
        seed: seed of the random weights (the global RNG state is left untouched).

    Returns:
        ``{"dino": root/"dino", "sd": root/"sd"}``.
    """
    root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="sdcorr-tiny-"))
    root.mkdir(parents=True, exist_ok=True)
    return {"dino": save_tiny_dino(root / "dino", seed), "sd": save_tiny_sd(root / "sd", seed)}


def save_tiny_dino(path: str | Path, seed: int = 0, registers: int = 0) -> Path:
    """Write a 12-block, patch-14, 32-wide DINOv2 (optionally with register tokens) to ``path``."""
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
    )

    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if registers:
            cfg = Dinov2WithRegistersConfig(**TINY_DINO, num_register_tokens=registers)
            model = Dinov2WithRegistersModel(cfg)
        else:
            model = Dinov2Model(Dinov2Config(**TINY_DINO))
    model.save_pretrained(path)
    return path


def save_tiny_sd(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny SD-1.5-shaped diffusers pipeline folder to ``path``."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    tokenizer = _tiny_tokenizer(path.parent / f".{path.name}-vocab")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TINY_UNET)
        vae = AutoencoderKL(**TINY_VAE)
        text = CLIPTextModel(
            CLIPTextConfig(
                **TINY_TEXT,
                vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """The byte ↔ printable-character table of byte-level BPE (GPT-2/CLIP)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _tiny_tokenizer(folder: Path):
    """A CLIP tokenizer over single bytes (no merges): 514 tokens, max length 77."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 77, "pad_token": "<|endoftext|>"})
    )
    return CLIPTokenizer.from_pretrained(folder)
