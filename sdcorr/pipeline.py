"""``SDDino``: the extractors, the feature cache, fusion and the matchers behind one object.

The jobs live in their own modules; this class only wires them together:
:mod:`sdcorr.loading` loads the models, :mod:`sdcorr.cache` keeps each image's raw features
(extracted once per process, mirrors included), :mod:`sdcorr.fusion` fuses a pair,
:mod:`sdcorr.pair` builds the pair to match (masks, flip alignment) and transfers points or
computes the dense flow on it.

Example:
    >>> pipe = SDDino.from_pretrained("sd-dino")  # doctest: +SKIP
    >>> pts = [[120.0, 80.0]]  # (x, y) in cat_a.jpg's pixels
    >>> m = pipe.match_points("cat_a.jpg", "cat_b.jpg", pts, category="cat")  # doctest: +SKIP
    >>> m.points_b  # (1, 2) (x, y) in cat_b.jpg's pixels  # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import FeatureCache, ImageFeatures, content_key, extraction_key
from .config import MatchConfig, PipelineConfig, get_preset, with_models
from .flip import FlipDecision, mirror_image
from .fusion import fuse_pair
from .image import ImageLike, load_image
from .match.dense import DenseFlow
from .match.sparse import transfer_points
from .pair import FusedPair, MaskLike, build_pair, dense_flow, resolve_mask, transfer
from .types import FeatureMap, Matches

__all__ = ["ImageFeatures", "MaskLike", "SDDino"]

SDFn = Callable[..., dict[str, FeatureMap]]  # (images, category) -> {layer: FeatureMap}
DinoFn = Callable[[Sequence[ImageLike]], FeatureMap]
Categories = str | Sequence[str | None] | None
Points = torch.Tensor | np.ndarray | list
PAIR_MEMO = 2  # fused pairs kept (a demo click after the page's preparation reuses its pair)


class SDDino:
    """Zero-shot semantic correspondence from fused SD and DINOv2 features.

    Args:
        config: the resolved pipeline configuration (its ``match`` settings, flip alignment
            included, apply to every match unless a call overrides them).
        sd: callable ``(images, category) -> {layer: FeatureMap}`` (an
            :class:`~sdcorr.features.sd.SDFeatureExtractor`, or any stand-in), ``None`` when the
            config has no SD branch.
        dino: callable ``(images) -> FeatureMap`` (a
            :class:`~sdcorr.features.dino.ViTExtractor`, or any stand-in), ``None`` without DINO.
        cache_size: images whose raw features are kept in memory (:mod:`sdcorr.cache`; each
            image is extracted in its own call, so results never depend on batching; 0: none
            kept). ``None`` with no ``cache_dir``: no cache, every call extracts its images as
            one batch (what stand-in extractors that treat the images of a batch differently
            need).
        cache_dir: folder of an on-disk feature cache shared between runs (``None``: none).
    """

    def __init__(
        self,
        config: PipelineConfig,
        sd: SDFn | None = None,
        dino: DinoFn | None = None,
        cache_size: int | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        if sd is None and dino is None:
            raise ValueError("SDDino needs an SD extractor, a DINO extractor, or both")
        self.config = config
        self.sd = sd
        self.dino = dino
        branch = sd if sd is not None else dino
        key = extraction_key(config, getattr(branch, "dtype", None))
        self._batch = cache_size is None and cache_dir is None  # no cache at all
        self.cache = FeatureCache(self._extract_one, size=cache_size or 0, disk=cache_dir,
                                  config_key=key, device=getattr(branch, "device", "cpu"))  # fmt: skip
        self._pairs: OrderedDict[tuple, FusedPair] = OrderedDict()

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
        cache_size: int = 8,
        cache_dir: str | Path | None = None,
    ) -> SDDino:
        """Load the models of a preset (or of ``config``).

        Args:
            preset: a name of :data:`sdcorr.config.PRESETS` (``sd-dino``: faithful default).
            device: ``"auto"`` picks cuda, mps, then cpu.
            dtype: ``None`` is fp16 on CUDA and fp32 elsewhere.
            dino_model: hub id, alias or local folder replacing the preset's DINOv2.
            sd_model: hub id, alias or local folder replacing the preset's SD pipeline.
            config: a full :class:`PipelineConfig` used instead of the preset.
            attention: ``"sdpa"`` or ``"xformers"`` for the U-Net.
            channels_last: store U-Net/VAE conv weights channels-last (for CUDA tensor cores).
            compile: ``torch.compile`` the model blocks (hooked modules stay eager).
            progress: called with a short message before each model loads.
            cache_size: images whose raw features are kept in memory.
            cache_dir: folder of an on-disk feature cache (``None``: memory only).
        """
        from .loading import load_extractors

        cfg = with_models(config or get_preset(preset), sd_model=sd_model, dino_model=dino_model)
        ext = load_extractors(cfg, device, dtype, attention, channels_last, compile, progress)
        return cls(ext.config, ext.sd, ext.dino, cache_size=cache_size, cache_dir=cache_dir)

    # ------------------------------------------------------------------ features
    def extract(
        self, images: Sequence[ImageLike], category: Categories = None, mirrored: bool = False
    ) -> list[ImageFeatures]:
        """Raw per-image features (before the per-pair PCA) of ``images`` in one batch, with no
        cache: one :class:`ImageFeatures` each.

        Args:
            images: paths, PIL images, arrays or tensors.
            category: one category for all images or one per image (SD prompt).
            mirrored: extract the horizontal mirrors of the images (for flip alignment).
        """
        load = mirror_image if mirrored else load_image
        images = [load(im) for im in images]  # decode each file once for both branches
        maps: dict[str, FeatureMap] = {}
        if self.sd is not None:
            maps.update(self.sd(images, category))
        if self.dino is not None:
            maps["dino"] = self.dino(images)
        return [ImageFeatures({k: v[i] for k, v in maps.items()}) for i in range(len(images))]

    def _extract_one(
        self, image: ImageLike, category: str | None, mirrored: bool = False
    ) -> ImageFeatures:
        return self.extract([image], category, mirrored)[0]

    def image_features(
        self, images: Sequence[ImageLike], category: str | None = None, mirrored: bool = False
    ) -> list[ImageFeatures]:
        """:meth:`extract` through the feature cache (:attr:`cache`): an image already seen
        (same content, mirroring and category) is not extracted again."""
        if self._batch:
            self.cache.count_extracted(len(images), mirrored)
            return self.extract(images, category, mirrored)
        return self.cache.get_many(images, category, mirrored)

    def fuse(self, a: ImageFeatures, b: ImageFeatures) -> tuple[FeatureMap, FeatureMap]:
        """Per-pair co-PCA and fusion → two ``(1, D, h, w)`` descriptor maps."""
        return fuse_pair(a.sd(), b.sd(), a.maps.get("dino"), b.maps.get("dino"), self.config.fusion)

    def features(
        self, img_a: ImageLike, img_b: ImageLike, category: str | None = None
    ) -> tuple[FeatureMap, FeatureMap]:
        """Fused descriptor maps of a pair (each image from the cache, or extracted once)."""
        return self.fuse(*self.image_features([img_a, img_b], category))

    def foreground_mask(
        self, image: ImageLike, category: str | None = None, mirrored: bool = False
    ) -> np.ndarray:
        """Automatic ``(H, W)`` bool foreground mask of ``image`` (of its mirror when
        ``mirrored``) from its DINO tokens (the finest SD layer without a DINO branch): token
        clusters rarely seen on the image border (see :mod:`sdcorr.masks`). Served from the
        feature cache when the image was just matched."""
        feats = self.image_features([image], category, mirrored)[0]
        return resolve_mask("auto", feats, self.config.fusion.sd_layers)

    # ------------------------------------------------------------------ pairs
    def match_config(self, **overrides: Any) -> MatchConfig:
        """The config's :class:`MatchConfig` with ``overrides`` (``None`` values keep a field)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self.config.match, **given) if given else self.config.match

    def pair(
        self,
        img_a: ImageLike,
        img_b: ImageLike,
        category: str | None = None,
        mask_a: MaskLike = None,
        mask_b: MaskLike = None,
        **match: Any,
    ) -> FusedPair:
        """The pair to match: fused maps, resolved masks and (with ``flip_align``) the source
        view closer to B (see :mod:`sdcorr.pair`). ``match`` overrides
        :class:`~sdcorr.config.MatchConfig` fields. The last pairs built from images and
        ``None``/``"auto"`` masks are remembered (when the cache keeps features in memory), so
        asking again costs no fusion."""
        cfg = self.match_config(**match)
        memo = self.cache.size > 0
        key = _memo_key(img_a, img_b, category, mask_a, mask_b, cfg, self.config) if memo else None
        if key is not None and key in self._pairs:
            self._pairs.move_to_end(key)
            return self._pairs[key]
        ra, rb = self.image_features([img_a, img_b], category)
        mirror = lambda: self.image_features([img_a], category, mirrored=True)[0]  # noqa: E731
        pair = self._build(ra, rb, mirror, mask_a, mask_b, cfg)
        if key is not None:
            self._pairs[key] = pair
            while len(self._pairs) > PAIR_MEMO:
                self._pairs.popitem(last=False)
        return pair

    def _build(self, ra, rb, mirror, mask_a, mask_b, cfg: MatchConfig) -> FusedPair:
        layers = self.config.fusion.sd_layers
        return build_pair(self.fuse, ra, rb, mirror, (mask_a, mask_b), cfg, layers)

    def flip_decision(
        self,
        img_a: ImageLike,
        img_b: ImageLike,
        category: str | None = None,
        mask_a: MaskLike = None,
        mask_b: MaskLike = None,
    ) -> FlipDecision:
        """Whether A's mirror matches B better (see :mod:`sdcorr.flip`), with both distances."""
        decision = self.pair(img_a, img_b, category, mask_a, mask_b, flip_align=True).decision
        assert decision is not None
        return decision

    # ------------------------------------------------------------------ matching
    def match_fused(
        self,
        fa: FeatureMap,
        fb: FeatureMap,
        points_a: Points,
        mask_a: np.ndarray | torch.Tensor | None = None,
        mask_b: np.ndarray | torch.Tensor | None = None,
        **match: Any,
    ) -> Matches:
        """Transfer ``points_a (K, 2)`` from fused map ``fa`` to ``fb``; ``match`` overrides
        :class:`~sdcorr.config.MatchConfig` fields (``mutual``, ``soft_argmax``, ...)."""
        cfg = self.match_config(**match)
        return transfer_points(fa, fb, points_a, cfg, mask_a=mask_a, mask_b=mask_b)

    def match_raw(
        self,
        ra: ImageFeatures,
        rb: ImageFeatures,
        points_a: Points,
        mirror: ImageFeatures | None = None,
        mask_a: MaskLike = None,
        mask_b: MaskLike = None,
        **match: Any,
    ) -> Matches:
        """:meth:`match_points` on raw per-image features (e.g. read from a feature file).

        Args:
            ra: raw features of A (:meth:`extract`).
            rb: raw features of B.
            points_a: ``(K, 2)`` ``(x, y)`` in A's original pixels.
            mirror: raw features of A's mirror (``extract([A], mirrored=True)``), needed when
                flip alignment is on.
            mask_a: ``(Ha, Wa)`` bool, ``"auto"`` or ``None``.
            mask_b: ``(Hb, Wb)`` bool, ``"auto"`` or ``None``.
            match: :class:`~sdcorr.config.MatchConfig` overrides (``flip_align``, ...).
        """
        cfg = self.match_config(**match)
        return transfer(self._build(ra, rb, lambda: mirror, mask_a, mask_b, cfg), points_a)

    def match_points(
        self,
        img_a: ImageLike,
        img_b: ImageLike,
        points_a: Points,
        category: str | None = None,
        mask_a: MaskLike = None,
        mask_b: MaskLike = None,
        **match: Any,
    ) -> Matches:
        """Transfer points ``(K, 2)`` ``(x, y)`` of A (original pixels) to B.

        Args:
            img_a: source image.
            img_b: target image.
            points_a: ``(K, 2)`` ``(x, y)`` in A's original pixels.
            category: SD prompt category.
            mask_a: ``(Ha, Wa)`` bool mask of A, ``"auto"`` (:meth:`foreground_mask`) or
                ``None``.
            mask_b: ``(Hb, Wb)`` bool mask of B (only cells inside it are candidates),
                ``"auto"`` or ``None``.
            match: :class:`~sdcorr.config.MatchConfig` overrides, e.g. ``flip_align=True``
                (transfer from A's mirror when it is closer to B; ``Matches.flipped`` says so).

        Returns:
            :class:`~sdcorr.types.Matches` with ``points_a`` as given and ``points_b`` in B's
            original pixels.
        """
        return transfer(self.pair(img_a, img_b, category, mask_a, mask_b, **match), points_a)

    def match_dense(
        self,
        img_a: ImageLike,
        img_b: ImageLike,
        category: str | None = None,
        grid: int | None = None,
        mask_a: MaskLike = None,
        mask_b: MaskLike = None,
        **match: Any,
    ) -> DenseFlow:
        """Dense B → A correspondence (``DenseFlow.to_pixels()`` gives per-pixel positions).

        Args:
            grid: cells per side of the match grid (``None``: the native grid).
            mask_a: ``(Ha, Wa)`` bool, ``"auto"`` or ``None``: only A cells inside are matched.
            mask_b: ``(Hb, Wb)`` bool, ``"auto"`` or ``None``: only B cells inside are valid.
            match: :class:`~sdcorr.config.MatchConfig` overrides, e.g. ``flip_align=True``
                (match against A's mirror when it is closer to B; the flow then still points
                into A's own pixels).
        """
        return dense_flow(self.pair(img_a, img_b, category, mask_a, mask_b, **match), grid)


def _memo_key(
    img_a: ImageLike, img_b: ImageLike, category: str | None, mask_a: MaskLike, mask_b: MaskLike,
    cfg: MatchConfig, config: PipelineConfig,
) -> tuple | None:  # fmt: skip
    """The key of a pair in the memo, or ``None`` when a mask is an array (not remembered)."""
    if not all(m is None or isinstance(m, str) for m in (mask_a, mask_b)):
        return None
    return (content_key(img_a), content_key(img_b), category, mask_a, mask_b, cfg, config)
