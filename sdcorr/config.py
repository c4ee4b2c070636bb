"""Frozen configuration dataclasses and the named presets.

``sd-dino`` is the faithful SD-DINO configuration (DESIGN.md, "Defaults"); ``dino`` and ``sd``
use one branch only; ``geoaware`` is GeoAware-SC's zero-shot configuration without its extra
models (timestep 50, empty prompt, no PCA, window soft-argmax, adaptive flip alignment);
``cleandift`` is that with CleanDIFT's noise-free U-Net (clean latents, t=261); ``dinov3`` and
``sd-dinov3`` swap DINOv2-B for DINOv3 ViT-B/16. Every result file records the resolved config
through :func:`to_dict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigError

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DINOV2_BASE = "facebook/dinov2-base"
DINOV3_BASE = "facebook/dinov3-vitb16-pretrain-lvd1689m"
CLEANDIFT_SD15_UNET = "CompVis/cleandift:cleandift_sd15_unet.safetensors"

#: Cells per side of the default DINO frame (SD-DINO's 840 / 14; 960 / 16 for DINOv3).
DEFAULT_GRID = 60
#: Patch sides of the supported DINO families (DINOv2, DINOv3): a DINO frame is a multiple of one.
DINO_PATCHES = (14, 16)
#: Frame pixels per cell of each hooked SD-1.5/2.1 layer (s3 finest, s5 coarsest): SD frames,
#: tiles and tile offsets are multiples of the coarsest.
SD_STRIDES = {"s3": 16, "s4": 32, "s5": 64}

# diffusers module paths of the hooked U-Net blocks, per SD family (same decoder layout).
SD_LAYERS: dict[str, tuple[tuple[str, str], ...]] = {
    "sd-1.5": (
        ("s3", "up_blocks.2.attentions.1"),
        ("s4", "up_blocks.1.attentions.1"),
        ("s5", "up_blocks.0.resnets.1"),
    ),
}
SD_LAYERS["sd-2.1"] = SD_LAYERS["sd-1.5"]


@dataclass(frozen=True)
class SDConfig:
    """Stable Diffusion feature extraction.

    Attributes:
        model: hub id or local folder of a diffusers SD pipeline.
        frame: side of the square model frame (pad-resize), a multiple of 64.
        tile_size: side of the square tiles the U-Net sees (``None``: the whole frame at once).
        tile_overlap: least overlap between neighbouring tiles; the last tile is shifted back to
            end at the border, so 512 tiles of a 960 frame start at {0, 448}.
        timestep: diffusion timestep of the single noising step.
        layers: ``(name, module path)`` of the hooked U-Net modules.
        prompt: fixed prompt; ``None`` uses ``prompt_template`` with a category, else "".
        prompt_template: prompt used when a category is given and ``prompt`` is ``None``.
        seed: seed of the one fixed noise tensor (CPU generator).
        batch_size: most tiles per U-Net forward (all tiles of several images at once).
        vae_batch_size: most tiles per VAE-encoder forward within that batch (its
            full-resolution activations dominate host memory: 8 tiles of 512² in fp32 peak at
            about 10.5 GB of RSS with the model weights, 4 tiles at about 8 GB); ``None``: 1 on
            CPU (one tile at a time is also faster there, README "Speed"), 4 elsewhere.
        early_exit: stop the U-Net right after the last hooked module.
        unet_weights: U-Net weights replacing the pipeline's (a local ``.safetensors``/``.bin``
            file or a hub ``repo:filename``, e.g. CleanDIFT's
            ``CompVis/cleandift:cleandift_sd15_unet.safetensors``); ``None`` keeps ``unet/``.
        noise: noise the latents at ``timestep`` (SD-DINO); ``False`` feeds the clean latents
            with the timestep as conditioning only (CleanDIFT).
    """

    model: str = SD15
    frame: int = 960
    tile_size: int | None = 512
    tile_overlap: int = 0
    timestep: int = 100
    layers: tuple[tuple[str, str], ...] = SD_LAYERS["sd-1.5"]
    prompt: str | None = None
    prompt_template: str = "a photo of a {category}"
    seed: int = 42
    batch_size: int = 8
    vae_batch_size: int | None = None
    early_exit: bool = True
    unet_weights: str | None = None
    noise: bool = True


@dataclass(frozen=True)
class DinoConfig:
    """DINOv2 / DINOv3 feature extraction (see :class:`sdcorr.features.dino.ViTExtractor`).

    ``frame=None`` picks ``60 x patch size``: 840 for DINOv2 (patch 14), 960 for DINOv3
    (patch 16), a 60x60 grid either way.
    """

    model: str = DINOV2_BASE
    frame: int | None = None
    layer: int = 11
    facet: str = "token"
    stride: int | None = None
    batch_size: int | None = None  # images per forward; None: 1 on CPU (faster there), else 4
    # DINOv2 position grid -> feature grid: "hub" (the facebookresearch/dinov2 rule the reference
    # ran: bicubic, scale_factor (n + 0.1) / 37) or "transformers" (bicubic to size=(n, n))
    pos_interpolation: str = "hub"


@dataclass(frozen=True)
class FusionConfig:
    """How SD and DINO maps become one descriptor (see :mod:`sdcorr.fusion`).

    Attributes:
        pca_dims: co-PCA output dims per SD layer (``None``: keep raw channels).
        sd_layers: order of the SD layers in the descriptor.
        layer_weights: scale of each SD layer's slice, in ``sd_layers`` order.
        sd_weight: weight of the L2-normalised SD part.
        dino_weight: weight of the L2-normalised DINO part.
    """

    pca_dims: int | None = 256
    sd_layers: tuple[str, ...] = ("s3", "s4", "s5")
    layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    sd_weight: float = 0.5
    dino_weight: float = 0.5


@dataclass(frozen=True)
class MatchConfig:
    """Nearest-neighbour matching options (see :mod:`sdcorr.match.sparse`).

    Attributes:
        mutual: check whether each match is a mutual nearest neighbour (``Matches.mutual``).
        soft_argmax: refine each match by a windowed soft-argmax (GeoAware-SC).
        window: half-size of the soft-argmax window in cells (5 → 11x11).
        beta: softmax temperature of the soft-argmax.
        content_only: search only target cells that overlap the image (not the padding).
        chunk: query rows per similarity block (bounds memory on large grids).
        flip_align: adaptive pose alignment (GeoAware-SC ``ADAPT_FLIP``): also match from the
            horizontal mirror of A and keep whichever is closer to B (see :mod:`sdcorr.flip`).
    """

    mutual: bool = False
    soft_argmax: bool = False
    window: int = 5
    beta: float = 0.02
    content_only: bool = True
    chunk: int = 4096
    flip_align: bool = False


@dataclass(frozen=True)
class PipelineConfig:
    """Everything :class:`sdcorr.SDDino` needs; ``sd``/``dino`` ``None`` disables a branch."""

    name: str = "sd-dino"
    sd: SDConfig | None = field(default_factory=SDConfig)
    dino: DinoConfig | None = field(default_factory=DinoConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    match: MatchConfig = field(default_factory=MatchConfig)


PRESETS: dict[str, PipelineConfig] = {
    "sd-dino": PipelineConfig(),
    "dino": PipelineConfig(
        name="dino", sd=None, fusion=FusionConfig(sd_weight=0.0, dino_weight=1.0)
    ),
    "sd": PipelineConfig(name="sd", dino=None, fusion=FusionConfig(sd_weight=1.0, dino_weight=0.0)),
    # GeoAware-SC zero-shot (configs/eval_zero_shot_spair.yaml; README "Presets" maps each field)
    "geoaware": PipelineConfig(
        name="geoaware",
        sd=SDConfig(timestep=50, prompt=""),
        fusion=FusionConfig(pca_dims=None),
        match=MatchConfig(soft_argmax=True, window=5, beta=0.02, flip_align=True),
    ),
    # CleanDIFT's GeoAware-SC evaluation (branch geoaware-sc-eval of CompVis/cleandift)
    "cleandift": PipelineConfig(
        name="cleandift",
        sd=SDConfig(
            timestep=261,
            noise=False,
            unet_weights=CLEANDIFT_SD15_UNET,
            prompt_template="A photo of a {category}",
        ),
        fusion=FusionConfig(pca_dims=None),
        match=MatchConfig(soft_argmax=True, window=5, beta=0.02, flip_align=True),
    ),
    "dinov3": PipelineConfig(
        name="dinov3",
        sd=None,
        dino=DinoConfig(model=DINOV3_BASE),
        fusion=FusionConfig(sd_weight=0.0, dino_weight=1.0),
    ),
    "sd-dinov3": PipelineConfig(name="sd-dinov3", dino=DinoConfig(model=DINOV3_BASE)),
}


def lookup(table: dict[str, Any], name: str, what: str = "preset") -> Any:
    """``table[name]``, or a :class:`ConfigError` naming ``what`` and listing the valid names."""
    try:
        return table[name]
    except KeyError:
        valid = ", ".join(sorted(table))
        raise ConfigError(f"unknown {what} '{name}' (valid: {valid})") from None


def get_preset(name: str) -> PipelineConfig:
    """Return the named preset, or raise :class:`ConfigError` listing the valid names."""
    return lookup(PRESETS, name)


def with_models(
    cfg: PipelineConfig, sd_model: str | None = None, dino_model: str | None = None
) -> PipelineConfig:
    """Return ``cfg`` with the SD and/or DINO model ids replaced (``None`` keeps them)."""
    sd = replace(cfg.sd, model=sd_model) if cfg.sd is not None and sd_model else cfg.sd
    dino = replace(cfg.dino, model=dino_model) if cfg.dino is not None and dino_model else cfg.dino
    return replace(cfg, sd=sd, dino=dino)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)
