"""The demo's model-side state: a pipeline per preset, and matching through it.

No Gradio here (the page in :mod:`sdcorr.demo.app` only calls these methods), so everything the
page shows is testable without a browser. Each pipeline comes resolved from the command line's
flags (``loader``), and every match goes through :meth:`sdcorr.SDDino.match_points`, the core
path ``sdcorr match A B --points`` takes, with the pipeline's own match settings (soft-argmax,
flip alignment, ...). Features are extracted once per image, category and preset by the
pipeline's feature cache, and the pair built for a click is remembered by the pipeline, so a
further click only matches.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import viz
from ..errors import ConfigError, ImageLoadError, PointsError, SdcorrError
from ..flip import mirror_points
from ..image import load_image
from ..match.sparse import point_similarity
from ..pair import FusedPair, dense_flow
from ..pipeline import MaskLike, SDDino
from ..types import FeatureMap

log = logging.getLogger("sdcorr")

Loader = Callable[[str], SDDino]  # preset name -> pipeline with the command line's options
Progress = Callable[[float, str], None]


def _no_progress(_fraction: float, _message: str) -> None:
    pass


class DemoSession:
    """Pipelines and matching for the demo page and its ``/match`` endpoint.

    Args:
        loader: ``loader(preset) -> SDDino`` (models and match settings resolved from the
            command line options).
        preset: the preset loaded first and used by the ``/match`` endpoint.
        category: default category (SD prompt) of the endpoint, as ``sdcorr match --category``.
        masks: ``(mask_a, mask_b)``, each ``"auto"`` or ``None``, as ``--mask-a/--mask-b``.
    """

    def __init__(
        self,
        loader: Loader,
        preset: str,
        category: str | None = None,
        masks: tuple[MaskLike, MaskLike] = (None, None),
    ) -> None:
        """See the class docstring."""
        self._loader = loader
        self.preset = preset
        self.category = category or None
        self.masks = masks
        self._pipes: dict[str, SDDino] = {}
        self._lock = threading.RLock()  # Gradio runs events in worker threads
        self.pipeline(preset)  # load the default models now, not on the first click

    # ------------------------------------------------------------------ models and features
    def pipeline(self, preset: str | None = None) -> SDDino:
        """The pipeline of ``preset`` (loaded on first use; a failed load is a one-line error)."""
        preset = preset or self.preset
        with self._lock:
            if preset not in self._pipes:
                self._pipes[preset] = self._load(preset)
            return self._pipes[preset]

    def _load(self, preset: str) -> SDDino:
        try:
            return self._loader(preset)
        except SdcorrError:
            raise
        except (OSError, ValueError) as err:  # e.g. a preset needing a model we do not have
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"cannot load preset '{preset}': {msg}") from None

    def extracted(self, preset: str | None = None) -> int:
        """How many images (mirrors included) the pipeline of ``preset`` has extracted so far."""
        stats = self.pipeline(preset).cache.stats
        return stats["extracted"] + stats["mirrors_extracted"]

    def pair(
        self,
        path_a: str | Path,
        path_b: str | Path,
        preset: str | None = None,
        category: str | None = None,
        progress: Progress = _no_progress,
    ) -> FusedPair:
        """The pair a click on A matches (see :meth:`sdcorr.SDDino.pair`), each image extracted
        at most once; ``progress(fraction, message)`` follows the extraction."""
        cat = self._cat(category)
        with self._lock:
            pipe = self.pipeline(preset)
            progress(0.1, "features of A")
            pipe.image_features([path_a], cat)
            progress(0.5, "features of B")
            pipe.image_features([path_b], cat)
            progress(0.9, "fusing")
            return pipe.pair(path_a, path_b, cat, *self.masks)

    def fused(
        self,
        path_a: str | Path,
        path_b: str | Path,
        preset: str | None = None,
        category: str | None = None,
        progress: Progress = _no_progress,
    ) -> tuple[FeatureMap, FeatureMap]:
        """Fused ``(1, D, h, w)`` maps of A and B (A itself, even when a click matches from its
        mirror)."""
        return self.pair(path_a, path_b, preset, category, progress).unflipped()

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

        Raises:
            ImageLoadError, PointsError: an image missing, a coordinate that is not a finite
                number (e.g. ``null`` sent to ``/match``) or outside A (one line).
        """
        if not path_a or not path_b:
            raise ImageLoadError("give both images, A and B")
        point = [coordinate("x", x), coordinate("y", y)]
        with self._lock:
            pipe = self.pipeline(preset)
            m = pipe.match_points(path_a, path_b, [point], self._cat(category), *self.masks)
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
        pair = self.pair(path_a, path_b, preset, category)
        a, b = _rgb(path_a), _rgb(path_b)
        query = (x, y)
        if pair.flipped:  # the heat map of the view the match came from
            query = tuple(mirror_points([[x, y]], a.shape[1])[0].tolist())
        sim = point_similarity(pair.fa, pair.fb, query)
        heat = viz.heatmap(b, sim, pair.fb.geometry[0])
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
        return viz.pca_panel(*self.fused(path_a, path_b, preset, category))

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

        flow = dense_flow(self.pair(path_a, path_b, preset, category), grid)
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


def coordinate(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number (not a bool, a string or ``None``), else a
    one-line :class:`PointsError` naming ``name`` and what came instead."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            shown = json.dumps(value)
        except (TypeError, ValueError):
            shown = type(value).__name__
        raise PointsError(f"{name} must be a number (a pixel coordinate in A), got {shown}")
    if not math.isfinite(value):
        raise PointsError(f"{name} must be a finite number, got {value}")
    return float(value)


def _rgb(path: str | Path) -> np.ndarray:
    return np.asarray(load_image(path))
