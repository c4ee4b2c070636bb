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

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .image import ImageLike
    from .types import FeatureMap

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


TINY_DINOV3 = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=12,
    num_attention_heads=2,
    patch_size=16,
    image_size=64,
    num_register_tokens=4,
    layerscale_value=1.0,
)
# The normalisation of DINOv3's satellite (SAT-493M) models, written to the tiny folder's image
# processor config so a test can tell whether the extractor reads it instead of ImageNet's.
TINY_DINOV3_NORM = {"image_mean": [0.430, 0.411, 0.296], "image_std": [0.213, 0.156, 0.143]}


def save_tiny_dinov3(path: str | Path, seed: int = 0) -> Path:
    """Write a 12-block, patch-16, 32-wide ``DINOv3ViTModel`` (4 register tokens, rotary
    positions) with a ``preprocessor_config.json`` to ``path``."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DINOv3ViTModel(DINOv3ViTConfig(**TINY_DINOV3))
    model.save_pretrained(path)
    proc = {
        "image_processor_type": "DINOv3ViTImageProcessorFast",
        "do_resize": True,
        "size": {"height": 224, "width": 224},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        **TINY_DINOV3_NORM,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(proc, indent=2))
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


class PositionOracle:
    """Stand-in extractor whose features encode where each cell "is" semantically.

    Image 0 of every call is the reference: the semantic position of a cell is its centre in
    frame pixels. For image 1 the semantic position is ``transform(centre)``: the point of
    image 0 that the cell shows. Features are Gaussian radial-basis embeddings of that position
    (centres every ``spacing`` frame pixels, width ``sigma``), so cosine similarity peaks where
    the positions coincide and falls off smoothly. Any matcher must then recover the inverse
    of ``transform`` exactly (up to the grid).

    Args:
        frame: square frame side (images should be ``frame x frame`` to avoid padding).
        stride: grid stride in frame pixels (DINO-like output), ignored when ``layers`` is set.
        transform: ``(K, 2) -> (K, 2)`` frame-pixel map for image 1 (``None``: identity).
        sigma: RBF width in frame pixels.
        spacing: distance between RBF centres in frame pixels.
        layers: ``{name: stride}`` to return SD-like ``{name: FeatureMap}`` instead.
    """

    def __init__(
        self,
        frame: int = 224,
        stride: int = 14,
        transform=None,
        sigma: float = 14.0,
        spacing: float = 7.0,
        layers: dict[str, int] | None = None,
    ) -> None:
        self.frame, self.stride, self.transform = frame, stride, transform
        self.sigma, self.layers = sigma, layers
        c = torch.arange(-3 * sigma, frame + 3 * sigma, spacing, dtype=torch.float64)
        self.centres = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1).view(-1, 2)

    def embed(self, pos: torch.Tensor) -> torch.Tensor:
        """``(K, 2)`` frame positions → ``(K, C)`` float32 RBF features."""
        d2 = torch.cdist(pos.double(), self.centres).pow(2)
        return torch.exp(-d2 / (2 * self.sigma**2)).float()

    def _map(self, width: int, height: int, index: int, stride: int):
        from .image import Geometry
        from .types import FeatureMap

        geo = Geometry(width, height, self.frame, stride)
        n = geo.grid[0]
        rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        centres = geo.cell_centre(torch.stack([cols.flatten(), rows.flatten()], 1))
        if index == 1 and self.transform is not None:
            centres = torch.as_tensor(self.transform(centres), dtype=torch.float64)
        feats = self.embed(centres).t().reshape(1, -1, n, n)
        return FeatureMap(feats, (geo,))

    def __call__(self, images, category=None):
        """Feature maps of ``images`` (only their sizes are read)."""
        import numpy as np

        from .image import load_image
        from .types import FeatureMap

        sizes = [
            load_image(im).size if not isinstance(im, np.ndarray) else im.shape[1::-1]
            for im in images
        ]
        if self.layers is None:
            maps = [self._map(w, h, i, self.stride) for i, (w, h) in enumerate(sizes)]
            return FeatureMap(
                torch.cat([m.features for m in maps]), tuple(m.geometry[0] for m in maps)
            )
        out = {}
        for name, stride in self.layers.items():
            maps = [self._map(w, h, i, stride) for i, (w, h) in enumerate(sizes)]
            out[name] = FeatureMap(
                torch.cat([m.features for m in maps]), tuple(m.geometry[0] for m in maps)
            )
        return out


class SharedExtractor:
    """An extractor whose features are computed once per image (keyed by its pixels) and then
    served from memory: the real-weights tests of several modules match, mask and flip the
    same spair-mini images at the 840 frame, and each is extracted once per test session.

    One image per call of the wrapped extractor, so a feature never depends on which other
    images shared its batch. ``extracted`` counts the images actually run through the model.
    """

    def __init__(self, inner: Callable[[list], FeatureMap]) -> None:
        self.inner = inner
        self.frame = inner.config.frame
        self.extracted = 0
        self._memo: dict[tuple, object] = {}

    def __call__(self, images: Sequence[ImageLike]) -> FeatureMap:
        """``(B, C, h, w)`` features of ``images``, each image run through the model once."""
        from .image import load_image
        from .types import FeatureMap

        maps = []
        for image in map(load_image, images):
            key = (image.size, image.mode, hashlib.sha1(image.tobytes()).hexdigest())
            if key not in self._memo:
                self._memo[key] = self.inner([image])
                self.extracted += 1
            maps.append(self._memo[key])
        feats = torch.cat([m.features for m in maps])
        return FeatureMap(feats, tuple(m.geometry[0] for m in maps))
