"""The demo's model-side state: pipelines per preset, a per-image feature cache, matching.

No Gradio here (the page in :mod:`sdcorr.demo.app` only calls these methods), so everything the
page shows is testable without a browser. Raw features are extracted once per
``(image, category, preset)`` through :class:`sdcorr.eval.cache.FeatureCache` (one image per
call, as the evaluation does); the fused pair is kept too, so a further click only matches.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import viz
from ..errors import ConfigError, SdcorrError
from ..eval.cache import FeatureCache
from ..image import load_image
from ..match.sparse import point_similarity
from ..pipeline import SDDino
from ..types import FeatureMap

log = logging.getLogger("sdcorr")

Loader = Callable[[str], SDDino]  # preset name -> pipeline with the CLI's model options
Progress = Callable[[float, str], None]


def _no_progress(_fraction: float, _message: str) -> None:
    pass


class DemoSession:
    """Pipelines, cached features and matching for the demo page and its ``/match`` endpoint.

    Args:
        loader: ``loader(preset) -> SDDino`` (models resolved from the command line options).
        preset: the preset loaded first and used by the ``/match`` endpoint.
        category: default category (SD prompt) of the endpoint, as ``sdcorr match --category``.
        soft_argmax: sub-cell refinement, as ``sdcorr match --soft-argmax``.
        cache_size: images kept per preset.
    """

    def __init__(
        self,
        loader: Loader,
        preset: str,
        category: str | None = None,
        soft_argmax: bool = False,
        cache_size: int = 16,
    ) -> None:
        """See the class docstring."""
        self._loader = loader
        self.preset = preset
        self.category = category or None
        self.soft_argmax = soft_argmax
        self._cache_size = cache_size
        self._pipes: dict[str, SDDino] = {}
        self._caches: dict[str, FeatureCache] = {}
        self._pairs: OrderedDict[tuple, tuple[FeatureMap, FeatureMap]] = OrderedDict()
        self._lock = threading.RLock()  # Gradio runs events in worker threads
        self.pipeline(preset)  # load the default models now, not on the first click

    # ------------------------------------------------------------------ models and features
    def pipeline(self, preset: str | None = None) -> SDDino:
        """The pipeline of ``preset`` (loaded on first use; a failed load is a one-line error)."""
        preset = preset or self.preset
        with self._lock:
            return self._pipeline(preset)

    def _pipeline(self, preset: str) -> SDDino:
        if preset not in self._pipes:
            try:
                self._pipes[preset] = self._loader(preset)
            except SdcorrError:
                raise
            except (OSError, ValueError) as err:  # e.g. a preset needing a model we do not have
                msg = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise ConfigError(f"cannot load preset '{preset}': {msg}") from None
            pipe = self._pipes[preset]
            self._caches[preset] = FeatureCache(
                lambda path, cat, pipe=pipe: pipe.extract([path], category=cat)[0],
                size=self._cache_size,
            )
        return self._pipes[preset]

    def extracted(self, preset: str | None = None) -> int:
        """How many images the feature cache of ``preset`` has extracted so far."""
        self.pipeline(preset)
        return self._caches[preset or self.preset].stats["extracted"]

    def fused(
        self,
        path_a: str | Path,
        path_b: str | Path,
        preset: str | None = None,
        category: str | None = None,
        progress: Progress = _no_progress,
    ) -> tuple[FeatureMap, FeatureMap]:
        """Fused ``(1, D, h, w)`` maps of A and B (each image extracted at most once)."""
        with self._lock:
            return self._fused(path_a, path_b, preset or self.preset, category, progress)

    def _fused(
        self, path_a: str | Path, path_b: str | Path, preset: str, category: str | None,
        progress: Progress,
    ) -> tuple[FeatureMap, FeatureMap]:  # fmt: skip
        key = (str(path_a), str(path_b), preset, category or None)
        if key in self._pairs:
            self._pairs.move_to_end(key)
            return self._pairs[key]
        pipe = self.pipeline(preset)
        cache = self._caches[preset]
        progress(0.1, "features of A")
        raw_a = cache.get(Path(path_a), category or None)
        progress(0.5, "features of B")
        raw_b = cache.get(Path(path_b), category or None)
        progress(0.9, "fusing")
        self._pairs[key] = pipe.fuse(raw_a, raw_b)
        while len(self._pairs) > 4:
            self._pairs.popitem(last=False)
        return self._pairs[key]

    # ------------------------------------------------------------------ matching
    def match(
        self,
        path_a: str | Path,
        path_b: str | Path,
        x: float,
        y: float,
        preset: str | None = None,
        category: str | None = None,
    ) -> dict[str, float]:
        """The match in B of A's pixel ``(x, y)``: ``{"x", "y", "score"}`` in B's pixels.

        Equals ``sdcorr match A B --points`` for that point with the same models and options.
        """
        preset = preset or self.preset
        category = self.category if category is None else category
        fa, fb = self.fused(path_a, path_b, preset, category)
        m = self.pipeline(preset).match_fused(
            fa, fb, [[float(x), float(y)]], mutual=False, soft_argmax=self.soft_argmax
        )
        (bx, by), score = m.points_b[0].tolist(), float(m.scores[0])
        return {"x": bx, "y": by, "score": score}

    def click(
        self,
        path_a: str | Path,
        path_b: str | Path,
        x: float,
        y: float,
        preset: str | None = None,
        category: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """What the page shows for a click on A at ``(x, y)``.

        Returns:
            A with the clicked point marked ``(Ha, Wa, 3)``, B with its match marked
            ``(Hb, Wb, 3)``, B's similarity heat map ``(Hb, Wb, 3)`` (all uint8), and the match
            ``{"a": [x, y], "x", "y", "score"}``.
        """
        result = self.match(path_a, path_b, x, y, preset, category)
        fa, fb = self.fused(path_a, path_b, preset or self.preset, self._cat(category))
        a, b = _rgb(path_a), _rgb(path_b)
        sim = point_similarity(fa, fb, (x, y))
        heat = viz.heatmap(b, sim, fb.geometry[0])
        bxy = (result["x"], result["y"])
        return (
            viz.draw_marker(a, (x, y)),
            viz.draw_marker(b, bxy),
            viz.draw_marker(heat, bxy),
            {"a": [float(x), float(y)], **result},
        )

    def pca(
        self, path_a: str | Path, path_b: str | Path, preset: str | None = None,
        category: str | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Both images side by side in joint PCA colours, ``(max(Ha, Hb), Wa + Wb, 3)`` uint8."""
        return viz.pca_panel(*self.fused(path_a, path_b, preset, self._cat(category)))

    def swap_gif(
        self,
        path_a: str | Path,
        path_b: str | Path,
        out: str | Path,
        preset: str | None = None,
        category: str | None = None,
        grid: int = 60,
        max_side: int = 256,
    ) -> Path:
        """Write the swap animation (A's pixels moving to their matches in B) as a GIF."""
        from ..match.dense import match_dense

        preset = preset or self.preset
        fa, fb = self.fused(path_a, path_b, preset, self._cat(category))
        flow = match_dense(fa, fb, grid, self.pipeline(preset).config.match)
        frames = viz.swap_frames_from_flow(_rgb(path_a), _rgb(path_b), flow, max_side)
        return viz.save_gif(frames, out, fps=20)

    def _cat(self, category: str | None) -> str | None:
        return (self.category if category is None else category) or None

    def describe(self, preset: str | None = None) -> str:
        """One line naming the preset and the models in use (shown on the page)."""
        cfg = self.pipeline(preset).config
        parts = [f"preset **{cfg.name}**"]
        if cfg.sd is not None:
            parts.append(f"Stable Diffusion `{cfg.sd.model}`")
        if cfg.dino is not None:
            parts.append(f"DINOv2 `{cfg.dino.model}`")
        return " · ".join(parts)


def _rgb(path: str | Path) -> np.ndarray:
    return np.asarray(load_image(path))
