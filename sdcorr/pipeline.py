"""``SDDino``: the extractors, fusion and matchers behind one object.

Example:
    >>> pipe = SDDino.from_pretrained("sd-dino")  # doctest: +SKIP
    >>> pts = [[120.0, 80.0]]  # (x, y) in cat_a.jpg's pixels
    >>> m = pipe.match_points("cat_a.jpg", "cat_b.jpg", pts, category="cat")  # doctest: +SKIP
    >>> m.points_b  # (1, 2) (x, y) in cat_b.jpg's pixels  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .config import PipelineConfig, get_preset, with_models
from .flip import FlipDecision, as_mask, decide, mirror_image, mirror_mask, mirror_points
from .fusion import fuse_pair
from .hub import resolve_model
from .image import ImageLike, load_image
from .match.dense import DenseFlow, match_dense
from .match.sparse import transfer_points
from .types import FeatureMap, Matches

SDFn = Callable[..., dict[str, FeatureMap]]  # (images, category) -> {layer: FeatureMap}
DinoFn = Callable[[Sequence[ImageLike]], FeatureMap]
Categories = str | Sequence[str | None] | None
MaskLike = np.ndarray | torch.Tensor | str | None  # an (H, W) bool mask, "auto" or None


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
        cache_size: images whose raw features the pair methods (``features``, ``match_points``,
            ``match_dense``, ``foreground_mask``) keep in memory, keyed by pixel content,
            category and mirroring (0: no cache; stand-in extractors that treat the images of a
            batch differently need 0).
    """

    def __init__(
        self,
        config: PipelineConfig,
        sd: SDFn | None = None,
        dino: DinoFn | None = None,
        cache_size: int = 0,
    ) -> None:
        self.config = config
        self.sd = sd
        self.dino = dino
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str | None], ImageFeatures] = OrderedDict()
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
        cache_size: int = 8,
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
            cache_size: images whose raw features are kept for the pair methods.
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
            note(f"loading DINO ({cfg.dino.model})")
            dino = ViTExtractor.from_config(cfg.dino, device=device, dtype=dtype)
            dino.optimize(compile=compile)
            cfg = replace(cfg, dino=replace(cfg.dino, frame=dino.config.frame))  # resolved frame
        return cls(cfg, sd, dino, cache_size=cache_size)

    # ------------------------------------------------------------------ features
    def extract(
        self, images: Sequence[ImageLike], category: Categories = None, mirrored: bool = False
    ) -> list[ImageFeatures]:
        """Raw per-image features (before the per-pair PCA), one :class:`ImageFeatures` each.

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

    def image_features(
        self, images: Sequence[ImageLike], category: str | None = None, mirrored: bool = False
    ) -> list[ImageFeatures]:
        """Like :meth:`extract` (of the mirrored images when ``mirrored``), through the cache:
        an image already seen (same pixels after any mirroring, same category) is not
        extracted again, and the misses are extracted in one batch."""
        pil = [mirror_image(im) if mirrored else load_image(im) for im in images]
        if self.cache_size <= 0:
            return self.extract(pil, category)
        keys = [(_pixel_key(im), category) for im in pil]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            first = {k: pil[keys.index(k)] for k in todo}
            for k, feats in zip(todo, self.extract(list(first.values()), category), strict=True):
                self._cache[k] = feats
        out = []
        for k in keys:
            self._cache.move_to_end(k)
            out.append(self._cache[k])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def fuse(self, a: ImageFeatures, b: ImageFeatures) -> tuple[FeatureMap, FeatureMap]:
        """Per-pair co-PCA and fusion → two ``(1, D, h, w)`` descriptor maps."""
        return fuse_pair(a.sd(), b.sd(), a.maps.get("dino"), b.maps.get("dino"), self.config.fusion)

    def features(
        self, img_a: ImageLike, img_b: ImageLike, category: str | None = None
    ) -> tuple[FeatureMap, FeatureMap]:
        """Fused descriptor maps of a pair (both images extracted in one batch)."""
        fa, fb = self.image_features([img_a, img_b], category)
        return self.fuse(fa, fb)

    # ------------------------------------------------------------------ masks
    def foreground_mask(
        self, image: ImageLike, category: str | None = None, mirrored: bool = False
    ) -> np.ndarray:
        """Automatic ``(H, W)`` bool foreground mask of ``image`` (of its mirror when
        ``mirrored``) from its DINO tokens (the finest SD layer without a DINO branch): token
        clusters rarely seen on the image border (see :mod:`sdcorr.masks`). Served from the
        feature cache when the image was just matched."""
        return self._resolve_mask("auto", self.image_features([image], category, mirrored)[0])

    def _mask_source(self, feats: ImageFeatures) -> FeatureMap:
        if "dino" in feats.maps:
            return feats.maps["dino"]
        sd = feats.sd() or {}
        order = [k for k in self.config.fusion.sd_layers if k in sd] or sorted(sd)
        return sd[order[0]]

    def _resolve_mask(
        self, mask: MaskLike, feats: ImageFeatures
    ) -> np.ndarray | torch.Tensor | None:
        if isinstance(mask, str):
            if mask != "auto":
                raise ValueError(f"mask must be an (H, W) array, 'auto' or None, got {mask!r}")
            from .masks import foreground_mask

            return foreground_mask(self._mask_source(feats))
        return as_mask(mask)

    def _pair(
        self,
        img_a: ImageLike,
        img_b: ImageLike,
        category: str | None,
        mask_a: MaskLike,
        mask_b: MaskLike,
        flip_align: bool,
    ) -> _Pair:
        """Fused maps and masks of (A, B), and of (mirror(A), B) when flip alignment decides
        for the mirror."""
        ra, rb = self.image_features([img_a, img_b], category)
        mirror = lambda: self.image_features([img_a], category, mirrored=True)[0]  # noqa: E731
        return self._pair_raw(ra, rb, mirror, mask_a, mask_b, flip_align)

    def _pair_raw(
        self,
        ra: ImageFeatures,
        rb: ImageFeatures,
        mirror: Callable[[], ImageFeatures],
        mask_a: MaskLike,
        mask_b: MaskLike,
        flip_align: bool,
    ) -> _Pair:
        ma = self._resolve_mask(mask_a, ra)
        mb = self._resolve_mask(mask_b, rb)
        fa, fb = self.fuse(ra, rb)
        pair = _Pair(fa, fb, ma, mb)
        if not flip_align:
            return pair
        rm = mirror()
        mm = self._resolve_mask(mask_a, rm) if isinstance(mask_a, str) else mirror_mask(ma)
        fm, fbm = self.fuse(rm, rb)
        decision = decide(fa, fb, fm, fbm, ma, mb, mm)
        if decision.flipped:
            return _Pair(fm, fbm, mm, mb, decision)
        return replace(pair, decision=decision)

    def flip_decision(
        self,
        img_a: ImageLike,
        img_b: ImageLike,
        category: str | None = None,
        mask_a: MaskLike = None,
        mask_b: MaskLike = None,
    ) -> FlipDecision:
        """Whether A's mirror matches B better (see :mod:`sdcorr.flip`), with both distances."""
        pair = self._pair(img_a, img_b, category, mask_a, mask_b, True)
        assert pair.decision is not None
        return pair.decision

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

    def match_raw(
        self,
        ra: ImageFeatures,
        rb: ImageFeatures,
        points_a: torch.Tensor | np.ndarray | list,
        mirror: ImageFeatures | None = None,
        mask_a: MaskLike = None,
        mask_b: MaskLike = None,
        **match: Any,
    ) -> Matches:
        """:meth:`match_points` on raw per-image features (e.g. from a feature cache).

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
        cfg = replace(self.config.match, **match)
        if cfg.flip_align and mirror is None:
            raise ValueError("flip alignment needs the raw features of A's mirror")
        pair = self._pair_raw(ra, rb, lambda: mirror, mask_a, mask_b, cfg.flip_align)
        return self._match_pair(pair, points_a, match)

    def _match_pair(self, pair: _Pair, points_a: Any, match: dict[str, Any]) -> Matches:
        if not pair.flipped:
            return self.match_fused(pair.fa, pair.fb, points_a, pair.mask_a, pair.mask_b, **match)
        geo = pair.fa.geometry[0]  # the mirror's: same size as A
        pts = geo.check_inside(points_a, "points of A")
        m = self.match_fused(
            pair.fa, pair.fb, mirror_points(pts, geo.width), pair.mask_a, pair.mask_b, **match
        )
        return replace(m, points_a=pts.float(), flipped=True)

    def match_points(
        self,
        img_a: ImageLike,
        img_b: ImageLike,
        points_a: torch.Tensor | np.ndarray | list,
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
        cfg = replace(self.config.match, **match)
        pair = self._pair(img_a, img_b, category, mask_a, mask_b, cfg.flip_align)
        return self._match_pair(pair, points_a, match)

    def match_dense(
        self,
        img_a: ImageLike,
        img_b: ImageLike,
        category: str | None = None,
        grid: int | None = None,
        mask_a: MaskLike = None,
        mask_b: MaskLike = None,
        flip_align: bool | None = None,
    ) -> DenseFlow:
        """Dense B → A correspondence (``DenseFlow.to_pixels()`` gives per-pixel positions).

        Args:
            mask_a: ``(Ha, Wa)`` bool, ``"auto"`` or ``None``: only A cells inside are matched.
            mask_b: ``(Hb, Wb)`` bool, ``"auto"`` or ``None``: only B cells inside are valid.
            flip_align: match against A's mirror when it is closer to B (default: the config's
                ``match.flip_align``); the flow then still points into A's own pixels.
        """
        flip = self.config.match.flip_align if flip_align is None else flip_align
        pair = self._pair(img_a, img_b, category, mask_a, mask_b, flip)
        flow = match_dense(pair.fa, pair.fb, grid, self.config.match, pair.mask_a, pair.mask_b)
        if not pair.flipped:
            return flow
        return _unmirror_flow(flow, load_image(img_a).width)


@dataclass(frozen=True)
class _Pair:
    """Fused maps and resolved masks of the source view that is used (A or its mirror)."""

    fa: FeatureMap
    fb: FeatureMap
    mask_a: np.ndarray | torch.Tensor | None
    mask_b: np.ndarray | torch.Tensor | None
    decision: FlipDecision | None = None

    @property
    def flipped(self) -> bool:
        return self.decision is not None and self.decision.flipped


def _pixel_key(image: Any) -> str:
    """Content key of a decoded (and possibly mirrored) image: sha1 of size, mode and pixels,
    so a mirror given as B and the mirror made for flip alignment share one entry."""
    h = hashlib.sha1(f"{image.size}{image.mode}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def _unmirror_flow(flow: DenseFlow, width: int) -> DenseFlow:
    """A flow into mirror(A)'s grid → the same flow into A's grid (fractional cells; A and its
    mirror share size, frame and grid, so ``geometry_a`` is unchanged)."""
    ga = flow.geometry_a
    h, w, _ = flow.cells_a.shape
    px = mirror_points(flow.points_a().reshape(-1, 2), width)
    frame = ga.to_frame(px)
    cells = (frame - (ga.cell - 1) / 2) / ga.stride
    return replace(flow, cells_a=cells.float().view(h, w, 2))
