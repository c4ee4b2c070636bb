"""DINOv2 and DINOv3 ViT features through ``transformers`` (any size, with or without registers).

The default reproduces SD-DINO: ``facebook/dinov2-base`` at an 840 frame (60x60 grid, patch 14),
the output tokens of block 11 before the final LayerNorm (``hidden_states[12]``), CLS and
register tokens dropped, ImageNet normalisation, pad-resize (never a centre crop), and the
37x37 position grid resized to the feature grid by the DINOv2 hub rule the reference ran
(:func:`hub_pos_embeddings`; ``DinoConfig.pos_interpolation="transformers"`` keeps the
transformers rule).

DINOv3 (``DINOv3ViTModel``, patch 16, rotary positions, 4 register tokens in the released
models) goes through the same code: its blocks are found under ``model.layer`` instead of
``encoder.layer``, the rotary embedding is computed for the frame's own grid (no position
interpolation), the default frame is 960 (60x60 grid), and the normalisation is read from the
model folder's ``preprocessor_config.json`` (ImageNet's when the folder has none).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DEFAULT_GRID, DinoConfig
from ..device import resolve_device, resolve_dtype
from ..errors import ConfigError, ModelLoadError, first_line
from ..hub import resolve_model
from ..image import Geometry, ImageLike, prepare_image
from ..types import FeatureMap
from .accel import cpu_or
from .hooks import capture

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FACETS = ("token", "key", "query", "value")
POS_INTERPOLATIONS = ("hub", "transformers")
HUB_INTERPOLATE_OFFSET = 0.1  # facebookresearch/dinov2 ``interpolate_offset``


class ViTExtractor:
    """Dense DINOv2/DINOv3 features on a square pad-resized frame.

    Args:
        model: a ``Dinov2Model``, ``Dinov2WithRegistersModel`` or ``DINOv3ViTModel``.
        config: frame (``None``: 60 x patch), layer, facet and stride (``model`` ignored here).
        device: torch device of the model.
        dtype: compute dtype (outputs are float32).
        mean: per-channel normalisation mean (default ImageNet's).
        std: per-channel normalisation std (default ImageNet's).
    """

    def __init__(
        self,
        model: nn.Module,
        config: DinoConfig | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        cfg = config or DinoConfig()
        self.device, self.dtype = torch.device(device), dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        mcfg = model.config
        self.patch = _patch_size(mcfg)
        self.stride = int(cfg.stride or self.patch)
        if cfg.frame is None:
            cfg = replace(cfg, frame=DEFAULT_GRID * self.patch)
        self.config = cfg
        self.num_prefix = 1 + int(getattr(mcfg, "num_register_tokens", 0) or 0)
        _validate(cfg, mcfg.num_hidden_layers, self.patch, self.stride)
        if cfg.pos_interpolation == "hub" and _is_dinov2(self.model):
            _use_hub_pos_interpolation(self.model, self.patch)
        if self.stride != self.patch:
            if is_dinov3(self.model):
                raise ConfigError("overlapping patches (stride < patch) need a DINOv2 model")
            _set_patch_stride(self.model, self.patch, self.stride)
        self._mean = torch.tensor(tuple(mean), dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(tuple(std), dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained(
        cls,
        model: str = "facebook/dinov2-base",
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        layer: int = 11,
        facet: str = "token",
        image_size: int | None = None,
        stride: int | None = None,
        revision: str | None = None,
        pos_interpolation: str = "hub",
    ) -> ViTExtractor:
        """Load DINOv2 or DINOv3 from a hub id, alias or local folder (e.g. ``sdcorr pretrain``
        output).

        ``device="auto"`` picks cuda, mps, then cpu; ``dtype=None`` is fp16 on CUDA, else fp32;
        ``image_size=None`` is 60 x patch (840 for DINOv2, 960 for DINOv3).
        ``pos_interpolation="hub"`` resizes DINOv2's position grid as the DINOv2 hub code does
        (see :func:`hub_pos_embeddings`); ``"transformers"`` keeps the transformers rule.
        """
        cfg = DinoConfig(
            model=model, frame=image_size, layer=layer, facet=facet, stride=stride,
            pos_interpolation=pos_interpolation,
        )  # fmt: skip
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        path = resolve_model(model, "dino", revision)  # checks config.json and the weights
        net = load_vit(path, dt)
        mean, std = folder_normalisation(path)
        return cls(net, cfg, dev, dt, mean=mean, std=std)

    @classmethod
    def from_config(
        cls, config: DinoConfig, device: str | torch.device = "auto", dtype=None
    ) -> ViTExtractor:
        """Load the model ``config.model`` with the rest of ``config``."""
        c = config
        return cls.from_pretrained(
            c.model, device=device, dtype=dtype, layer=c.layer, facet=c.facet,
            image_size=c.frame, stride=c.stride, pos_interpolation=c.pos_interpolation,
        )  # fmt: skip

    def optimize(self, compile: bool = False, backend: str | None = None) -> ViTExtractor:
        """Opt-in ``torch.compile`` of the ViT blocks (the hooked block stays eager)."""
        from .accel import compile_blocks

        if compile:
            compile_blocks(self.model, [self.hooked_module()], backend=backend)
        return self

    def hooked_module(self) -> nn.Module:
        """The module whose output is the feature (the block, or its q/k/v projection)."""
        block = vit_blocks(self.model)[self.config.layer]
        facet = self.config.facet
        return block if facet == "token" else facet_module(block, facet)

    # ------------------------------------------------------------------ geometry
    def geometry(self, width: int, height: int) -> Geometry:
        """Geometry of an original ``width x height`` image on this extractor's grid."""
        return Geometry(width, height, self.config.frame, self.stride, self.patch)

    def prepare(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor, list[Geometry]]:
        """Pad-resize and normalise: ``(B, 3, frame, frame)`` float32 and geometries."""
        prepared = [prepare_image(im, self.config.frame) for im in images]
        pixels = torch.stack([p.pixels for p in prepared])
        pixels = (pixels - self._mean) / self._std
        geos = [self.geometry(p.geometry.width, p.geometry.height) for p in prepared]
        return pixels, geos

    # ------------------------------------------------------------------ features
    @torch.inference_mode()
    def forward_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Features of normalised pixels ``(B, 3, S, S)`` → ``(B, C, n, n)`` float32."""
        n = (pixels.shape[-1] - self.patch) // self.stride + 1
        x = pixels.to(self.device, self.dtype)
        out = capture(lambda: self.model(pixel_values=x), {"f": self.hooked_module()})["f"]
        tokens = out[:, self.num_prefix :].float()
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, n, n).contiguous()

    def __call__(self, images: Sequence[ImageLike] | ImageLike) -> FeatureMap:
        """Features of one image or a list: ``FeatureMap`` with ``(B, C, n, n)`` float32
        features on the model's device."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        pixels, geos = self.prepare(images)
        bs = max(1, self.config.batch_size or cpu_or(self.device, 1, 4))
        feats = [self.forward_pixels(pixels[i : i + bs]) for i in range(0, len(pixels), bs)]
        return FeatureMap(torch.cat(feats), tuple(geos))


def _validate(cfg: DinoConfig, num_layers: int, patch: int, stride: int) -> None:
    if cfg.pos_interpolation not in POS_INTERPOLATIONS:
        raise ConfigError(
            f"unknown position interpolation '{cfg.pos_interpolation}' "
            f"(valid: {', '.join(POS_INTERPOLATIONS)})"
        )
    if cfg.facet not in FACETS:
        raise ConfigError(f"unknown facet '{cfg.facet}' (valid: {', '.join(FACETS)})")
    if not 0 <= cfg.layer < num_layers:
        raise ConfigError(f"layer {cfg.layer} out of range for a {num_layers}-block model")
    if stride > patch or patch % stride:
        raise ConfigError(f"stride {stride} must divide the patch size {patch}")
    if cfg.frame < patch or (cfg.frame - patch) % stride:
        raise ConfigError(f"frame {cfg.frame} does not fit patch {patch} with stride {stride}")


def facet_module(block: nn.Module, facet: str) -> nn.Module:
    """The ``key``/``query``/``value`` projection of a DINOv2 block (transformers 4.x and 5.x)."""
    for path in (f"attention.{facet[0]}_proj", f"attention.attention.{facet}"):
        try:
            return block.get_submodule(path)
        except AttributeError:
            continue
    raise ConfigError(f"cannot find the {facet} projection in {type(block).__name__}")


def hub_pos_embeddings(
    table: torch.Tensor, grid: tuple[int, int], offset: float = HUB_INTERPOLATE_OFFSET
) -> torch.Tensor:
    """Resize a ViT position table to a ``grid`` of patches by the DINOv2 hub rule.

    The hub code (``facebookresearch/dinov2``, as loaded by the SD-DINO reference) resizes the
    ``M x M`` grid bicubically (``align_corners=False``, no antialias, in float32) with
    ``scale_factor = (n + offset) / M`` rather than ``size = (n, n)``; the scale factor sets the
    sampling positions, so every token differs from transformers' ``size=`` rule. A grid equal to
    the table's is returned unchanged.

    Args:
        table: ``(1, 1 + M * M, C)`` position embeddings, class token first.
        grid: ``(h, w)`` patches of the input.
        offset: the hub's ``interpolate_offset``.

    Returns:
        ``(1, 1 + h * w, C)`` in ``table``'s dtype.
    """
    m = math.isqrt(table.shape[1] - 1)
    if m * m != table.shape[1] - 1:
        raise ValueError(f"position table of {table.shape[1] - 1} patches is not square")
    if tuple(grid) == (m, m):
        return table
    h, w = grid
    pos = table[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    scale = ((h + offset) / m, (w + offset) / m)
    pos = F.interpolate(pos, scale_factor=scale, mode="bicubic", align_corners=False)
    if tuple(pos.shape[-2:]) != (h, w):
        raise ValueError(f"hub interpolation gave a {tuple(pos.shape[-2:])} grid, not {(h, w)}")
    pos = pos.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(table.dtype)
    return torch.cat([table[:, :1], pos], dim=1)


def _is_dinov2(model: nn.Module) -> bool:
    kind = getattr(model.config, "model_type", "")
    return kind in ("dinov2", "dinov2_with_registers")


def _use_hub_pos_interpolation(model: nn.Module, patch: int) -> None:
    """Make the model's embeddings use :func:`hub_pos_embeddings` (instance-level, upstream code
    untouched; called with the input height and width as transformers does)."""
    emb = model.embeddings

    def interpolate(embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        grid = (height // patch, width // patch)
        return hub_pos_embeddings(emb.position_embeddings, grid).to(embeddings.dtype)

    emb.interpolate_pos_encoding = interpolate


def _set_patch_stride(model: nn.Module, patch: int, stride: int) -> None:
    """Overlapping patches: conv stride ``stride`` and position embeddings on the denser grid.

    The upstream embedding sizes its position grid as ``height // patch``; with overlapping
    patches the grid is ``(height - patch) // stride + 1``, so the call is forwarded with the
    height that yields that grid (instance-level wrapper, upstream code untouched).
    """
    emb = model.embeddings
    emb.patch_embeddings.projection.stride = (stride, stride)
    upstream = emb.interpolate_pos_encoding

    def interpolate(embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        gh = (height - patch) // stride + 1
        gw = (width - patch) // stride + 1
        return upstream(embeddings, gh * patch, gw * patch)

    emb.interpolate_pos_encoding = interpolate


# ---------------------------------------------------------------------------- DINOv3 support
def is_dinov3(model: nn.Module) -> bool:
    """Whether ``model`` is a transformers ``DINOv3ViTModel`` (rotary positions, ``model.layer``)."""
    return getattr(model.config, "model_type", "") == "dinov3_vit"


def vit_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a DINOv2 (``encoder.layer``) or DINOv3 (``model.layer``) model."""
    for path in ("encoder.layer", "model.layer"):
        try:
            return model.get_submodule(path)
        except AttributeError:
            continue
    raise ConfigError(f"cannot find the transformer blocks of {type(model).__name__}")


def _patch_size(mcfg) -> int:
    p = mcfg.patch_size
    if isinstance(p, (list, tuple)):
        if len(set(p)) != 1:
            raise ConfigError(f"non-square patches {tuple(p)} are not supported")
        p = p[0]
    return int(p)


def load_vit(path: Path, dtype: torch.dtype) -> nn.Module:
    """``AutoModel.from_pretrained(path)`` with a broken folder as one :class:`ModelLoadError`
    line naming it (weights that transformers refuses, e.g. a ``pytorch_model.bin`` pickling
    Python objects other than tensors, which ``torch.load(weights_only=True)`` never runs)."""
    import pickle

    from safetensors import SafetensorError
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    except pickle.UnpicklingError:
        raise ModelLoadError(
            f"model folder {path}: torch.load(weights_only=True) refused its pytorch_model.bin "
            "(it pickles Python objects other than tensors, or is damaged); nothing of it ran"
        ) from None
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:
        raise ModelLoadError(
            f"model folder {path} cannot be loaded ({type(err).__name__}: {first_line(err)})"
        ) from None


def folder_normalisation(path: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` from a model folder's ``preprocessor_config.json`` (ImageNet's if absent)."""
    f = Path(path) / "preprocessor_config.json"
    if not f.is_file():
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        data = json.loads(f.read_text())
        mean = tuple(float(v) for v in data.get("image_mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in data.get("image_std", IMAGENET_STD))
    except (ValueError, TypeError, AttributeError):
        raise ConfigError(f"unreadable image processor config: {f}") from None
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"{f} must give 3 image_mean and 3 image_std values")
    return mean, std
