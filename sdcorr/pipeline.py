"""``SDDino``: the extractors, fusion and matchers behind one object.

Example:
    >>> pipe = SDDino.from_pretrained("sd-dino")  # doctest: +SKIP
    >>> pts = [[120.0, 80.0]]  # (x, y) in cat_a.jpg's pixels
    >>> m = pipe.match_points("cat_a.jpg", "cat_b.jpg", pts, category="cat")  # doctest: +SKIP
    >>> m.points_b  # (1, 2) (x, y) in cat_b.jpg's pixels  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .config import PipelineConfig, get_preset, with_models
from .fusion import fuse_pair
from .hub import resolve_model
from .image import ImageLike, load_image
from .match.dense import DenseFlow, match_dense
from .match.sparse import transfer_points
from .types import FeatureMap, Matches

SDFn = Callable[..., dict[str, FeatureMap]]  # (images, category) -> {layer: FeatureMap}
DinoFn = Callable[[Sequence[ImageLike]], FeatureMap]
Categories = str | Sequence[str | None] | None


@dataclass(frozen=True)
class ImageFeatures:
    """Raw features of one image, before the per-pair PCA (what a cache stores).

    Attributes:
        maps: ``{"s3"|"s4"|"s5"|"dino": FeatureMap (1, C, h, w)}`` for the enabled branches.
    """

    maps: dict[str, FeatureMap]

    def to(self, *args: Any, **kwargs: Any) -> ImageFeatures:
        """Move/cast every map like :meth:`torch.Tensor.to`."""
        return ImageFeatures({k: v.to(*args, **kwargs) for k, v in self.maps.items()})

    @property
    def nbytes(self) -> int:
        """Bytes held by the feature tensors."""
        return sum(m.features.numel() * m.features.element_size() for m in self.maps.values())

    def sd(self) -> dict[str, FeatureMap] | None:
        """The SD layer maps, or ``None`` without the SD branch."""
        sd = {k: v for k, v in self.maps.items() if k != "dino"}
        return sd or None


class SDDino:
    """Zero-shot semantic correspondence from fused SD and DINOv2 features.

    Args:
        config: the resolved pipeline configuration.
        sd: callable ``(images, category) -> {layer: FeatureMap}`` (an
            :class:`~sdcorr.features.sd.SDFeatureExtractor`, or any stand-in), ``None`` when the
            config has no SD branch.
        dino: callable ``(images) -> FeatureMap`` (a
            :class:`~sdcorr.features.dino.ViTExtractor`, or any stand-in), ``None`` without DINO.
    """

    def __init__(
        self, config: PipelineConfig, sd: SDFn | None = None, dino: DinoFn | None = None
    ) -> None:
        self.config = config
        self.sd = sd
        self.dino = dino
        if sd is None and dino is None:
            raise ValueError("SDDino needs an SD extractor, a DINO extractor, or both")

    @classmethod
    def from_pretrained(
        cls,
        preset: str = "sd-dino",
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        dino_model: str | None = None,
        sd_model: str | None = None,
        config: PipelineConfig | None = None,
        attention: str = "sdpa",
        channels_last: bool = False,
        compile: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> SDDino:
        """Load the models of a preset (or of ``config``).

        Args:
            preset: ``sd-dino`` (faithful default), ``dino``, ``sd`` or ``geoaware``.
            device: ``"auto"`` picks cuda, mps, then cpu.
            dtype: ``None`` is fp16 on CUDA and fp32 elsewhere.
            dino_model: hub id, alias or local folder replacing the preset's DINOv2.
            sd_model: hub id, alias or local folder replacing the preset's SD pipeline.
            config: a full :class:`PipelineConfig` used instead of the preset.
            attention: ``"sdpa"`` or ``"xformers"`` for the U-Net.
            channels_last: store U-Net/VAE conv weights channels-last (for CUDA tensor cores).
            compile: ``torch.compile`` the model blocks (hooked modules stay eager).
            progress: called with a short message before each model loads.
        """
        from .features.dino import ViTExtractor
        from .features.sd import SDFeatureExtractor

        cfg = with_models(config or get_preset(preset), sd_model=sd_model, dino_model=dino_model)
        for kind, branch in (("dino", cfg.dino), ("sd", cfg.sd)):
            if branch is not None:
                resolve_model(branch.model, kind)  # fail on a missing model before loading any
        note = progress or (lambda _msg: None)
        sd = dino = None
        if cfg.sd is not None:
            note(f"loading Stable Diffusion ({cfg.sd.model})")
            sd = SDFeatureExtractor.from_pretrained(
                cfg.sd.model, config=cfg.sd, device=device, dtype=dtype, attention=attention
            ).optimize(channels_last=channels_last, compile=compile)
        if cfg.dino is not None:
            note(f"loading DINOv2 ({cfg.dino.model})")
            dino = ViTExtractor.from_config(cfg.dino, device=device, dtype=dtype)
            dino.optimize(compile=compile)
        return cls(cfg, sd, dino)

    # ------------------------------------------------------------------ features
    def extract(
        self, images: Sequence[ImageLike], category: Categories = None
    ) -> list[ImageFeatures]:
        """Raw per-image features (before the per-pair PCA), one :class:`ImageFeatures` each.

        Args:
            images: paths, PIL images, arrays or tensors.
            category: one category for all images or one per image (SD prompt).
        """
        images = [load_image(im) for im in images]  # decode each file once for both branches
        maps: dict[str, FeatureMap] = {}
        if self.sd is not None:
            maps.update(self.sd(images, category))
        if self.dino is not None:
            maps["dino"] = self.dino(images)
        return [ImageFeatures({k: v[i] for k, v in maps.items()}) for i in range(len(images))]

    def fuse(self, a: ImageFeatures, b: ImageFeatures) -> tuple[FeatureMap, FeatureMap]:
        """Per-pair co-PCA and fusion → two ``(1, D, h, w)`` descriptor maps."""
        return fuse_pair(a.sd(), b.sd(), a.maps.get("dino"), b.maps.get("dino"), self.config.fusion)

    def features(
        self, img_a: ImageLike, img_b: ImageLike, category: str | None = None
    ) -> tuple[FeatureMap, FeatureMap]:
        """Fused descriptor maps of a pair (both images extracted in one batch)."""
        fa, fb = self.extract([img_a, img_b], category)
        return self.fuse(fa, fb)

    # ------------------------------------------------------------------ matching
    def match_fused(
        self,
        fa: FeatureMap,
        fb: FeatureMap,
        points_a: torch.Tensor | np.ndarray | list,
        mask_a: np.ndarray | torch.Tensor | None = None,
        mask_b: np.ndarray | torch.Tensor | None = None,
        **match: Any,
    ) -> Matches:
        """Transfer ``points_a (K, 2)`` from fused map ``fa`` to ``fb``; ``match`` overrides
        :class:`~sdcorr.config.MatchConfig` fields (``mutual``, ``soft_argmax``, ...)."""
        cfg = replace(self.config.match, **match)
        return transfer_points(fa, fb, points_a, cfg, mask_a=mask_a, mask_b=mask_b)

    def match_points(
        self,
        img_a: ImageLike,
        img_b: ImageLike,
        points_a: torch.Tensor | np.ndarray | list,
        category: str | None = None,
        **match: Any,
    ) -> Matches:
        """Transfer points ``(K, 2)`` ``(x, y)`` of A (original pixels) to B.

        Returns:
            :class:`~sdcorr.types.Matches` with ``points_b`` in B's original pixels.
        """
        fa, fb = self.features(img_a, img_b, category)
        return self.match_fused(fa, fb, points_a, **match)

    def match_dense(
        self,
        img_a: ImageLike,
        img_b: ImageLike,
        category: str | None = None,
        grid: int | None = None,
        mask_a: np.ndarray | torch.Tensor | None = None,
        mask_b: np.ndarray | torch.Tensor | None = None,
    ) -> DenseFlow:
        """Dense B → A correspondence (``DenseFlow.to_pixels()`` gives per-pixel positions)."""
        fa, fb = self.features(img_a, img_b, category)
        return match_dense(fa, fb, grid, self.config.match, mask_a=mask_a, mask_b=mask_b)
