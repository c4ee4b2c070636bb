"""The steps of matching one pair, shared by ``sdcorr match A B`` and ``sdcorr match --pairs``.

Reading the user's points and masks, building the pair once (fusion, masks and the flip decision:
:meth:`sdcorr.SDDino.pair`), transferring the points and computing the dense flow on that one
pair, and writing the pair's outputs (swap GIF/PNG, plot, JSON, flow, PCA) through an
:class:`~sdcorr.commands.common.Outputs`.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import io
from ..config import to_dict
from ..errors import ImageLoadError, OutputError, PointsError
from ..image import Geometry, load_image
from ..match.dense import DenseFlow
from ..pair import FusedPair, MaskLike, dense_flow, transfer
from ..types import FeatureMap, Matches
from .common import Outputs

log = logging.getLogger("sdcorr")

SUFFIXES = {"out": (".gif", ".png"), "flow": (".npz",), "pca": (".png",)}


@dataclass(frozen=True)
class Targets:
    """The output files of one pair (``None``: not written)."""

    out: str | None = None
    json: str | None = None
    plot: str | None = None
    flow: str | None = None
    pca: str | None = None

    def check_suffixes(self) -> None:
        """Raise :class:`OutputError` when an output option names a file of the wrong kind."""
        for name, exts in SUFFIXES.items():
            value = getattr(self, name)
            if value and Path(value).suffix.lower() not in exts:
                raise OutputError(f"--{name} must end in {' or '.join(exts)}, got {value}")


@dataclass(frozen=True)
class Drawing:
    """How a pair is matched densely and drawn (``--grid-step``, ``--dense-grid``, ``--fps``,
    ``--max-side``)."""

    grid_step: int = 4
    dense_grid: int = 156
    fps: float = 30.0
    max_side: int = 320


@dataclass(frozen=True)
class PairInputs:
    """One pair as the user gave it, checked.

    Attributes:
        name_a: A as given (recorded in the JSON).
        name_b: B as given.
        img_a: A decoded (RGB).
        img_b: B decoded.
        points: ``(K, 2)`` ``(x, y)`` of A to transfer (``None``: a grid of A's cells).
        masks: ``(mask_a, mask_b)``: ``(H, W)`` bool arrays, ``"auto"`` or ``None``.
        category: the SD prompt's category.
    """

    name_a: str
    name_b: str
    img_a: Image.Image
    img_b: Image.Image
    points: torch.Tensor | None = None
    masks: tuple[MaskLike, MaskLike] = (None, None)
    category: str | None = None


@dataclass(frozen=True)
class PairResult:
    """What matching one pair gives: the pair, its matches and (when asked) its dense flow."""

    pair: FusedPair
    matches: Matches
    flow: DenseFlow | None = None


def targets(args: argparse.Namespace) -> Targets:
    """The output files ``sdcorr match``'s flags ask for."""
    return Targets(out=args.out, json=args.json, plot=args.plot, flow=args.flow, pca=args.pca)


def drawing(args: argparse.Namespace) -> Drawing:
    """How ``sdcorr match``'s flags ask for the dense match and the GIF."""
    return Drawing(args.grid_step, args.dense_grid, args.fps, args.max_side)


# ---------------------------------------------------------------------------- reading
def read_points(path: str, geo: Geometry) -> torch.Tensor:
    """``(K, 2)`` points of a JSON file (a list of ``[x, y]``, or ``{"points": [...]}``), all
    inside the image of ``geo``."""
    if Path(path).is_dir():
        raise PointsError(f"--points must be a JSON file, got a folder: {path}")
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PointsError(f"points file not found: {path}") from None
    except OSError as err:
        raise PointsError(f"points file cannot be read: {path} ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PointsError(f"points file is not valid JSON: {path}") from None
    if isinstance(data, dict):
        data = data.get("points", data.get("points_a"))
    try:
        pts = torch.tensor(data, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise PointsError(f"points file must hold a list of [x, y] pairs: {path}") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise PointsError(f"points file must hold a non-empty list of [x, y] pairs: {path}")
    return geo.check_inside(pts, f"points of {path}")


def read_mask(path: str | None, size: tuple[int, int]) -> np.ndarray | str | None:
    """A mask PNG (nonzero = object) of an image of ``size = (w, h)``; ``"auto"``/``None`` pass
    through (automatic masks are computed from the features once the models are loaded)."""
    if path is None or path == "auto":
        return path
    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L")) > 0
    except FileNotFoundError:
        raise ImageLoadError(f"mask file not found: {path}") from None
    except (OSError, Image.DecompressionBombError):
        load_image(path)  # raises the typed "not a readable image" / "too large" error
        raise
    if mask.shape != (size[1], size[0]):
        raise ImageLoadError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]}, image is {size[0]}x{size[1]}"
        )
    if not mask.any():
        raise ImageLoadError(f"mask {path} is empty")
    return mask


# ---------------------------------------------------------------------------- matching
def build(pipe: Any, inputs: PairInputs) -> FusedPair:
    """The pair to match, built once (fusion, masks, flip decision) from the feature cache."""
    return pipe.pair(inputs.img_a, inputs.img_b, inputs.category, *inputs.masks)


def match(pair: FusedPair, inputs: PairInputs, drawing: Drawing, dense: bool) -> PairResult:
    """Transfer the points (default: every ``grid_step``-th cell of A) and, when ``dense``, the
    dense B → A flow on the ``dense_grid`` grid, both on the one ``pair``."""
    pts = inputs.points if inputs.points is not None else grid_points(pair.fa, drawing.grid_step)
    flow = dense_flow(pair, drawing.dense_grid or None) if dense else None
    return PairResult(pair, transfer(pair, pts), flow)


def grid_points(fa: FeatureMap, step: int) -> torch.Tensor:
    """Every ``step``-th content cell of A; every cell when that grid misses a thin image."""
    geo = fa.geometry[0]
    pts = geo.grid_points(step)
    if len(pts) == 0 and step > 1:
        log.warning("no point of the every-%dth-cell grid lies on A; using every cell", step)
        pts = geo.grid_points(1)
    return pts


# ---------------------------------------------------------------------------- writing
def write(
    result: PairResult, inputs: PairInputs, targets: Targets, drawing: Drawing, config: Any,
    outputs: Outputs,
) -> list[tuple[str, str]]:  # fmt: skip
    """Stage every requested output of the pair in ``outputs``; ``[(kind, path), ...]``."""
    written = []
    if targets.out:
        _write_swap(result.flow, inputs, targets.out, drawing, outputs)
        written.append(("swap", targets.out))
    if targets.plot:
        from .. import viz

        a, b = np.asarray(inputs.img_a), np.asarray(inputs.img_b)
        viz.plot_matches(a, b, result.matches, path=outputs.stage(targets.plot))
        written.append(("plot", targets.plot))
    if targets.json:
        io.write_json(outputs.stage(targets.json), _record(result.matches, inputs, config))
        written.append(("json", targets.json))
    return written + _write_flow_pca(result, targets, outputs)


def _write_swap(
    flow: DenseFlow | None, inputs: PairInputs, target: str, drawing: Drawing, outputs: Outputs
) -> None:
    from .. import viz

    assert flow is not None
    tmp = outputs.stage(target)
    if Path(target).suffix.lower() == ".gif":
        # flow sampled at the GIF's size: memory does not grow with the input's megapixels
        frames = viz.swap_frames_from_flow(inputs.img_a, inputs.img_b, flow, drawing.max_side)
        viz.save_gif(frames, tmp, fps=drawing.fps)
    else:
        px, valid = flow.to_pixels("nearest").numpy(), flow.valid_pixels().numpy()
        viz.save_png(viz.swap_image(inputs.img_a, inputs.img_b, px, mask_b=valid), tmp)


def _write_flow_pca(
    result: PairResult, targets: Targets, outputs: Outputs
) -> list[tuple[str, str]]:
    from ..match.dense import save_flow
    from ..viz import save_pca

    written = []
    if targets.flow:
        assert result.flow is not None
        save_flow(outputs.stage(targets.flow), result.flow)
        written.append(("flow", targets.flow))
    if targets.pca:
        save_pca(outputs.stage(targets.pca), *result.pair.unflipped())
        written.append(("pca", targets.pca))
    return written


def _record(m: Matches, inputs: PairInputs, config: Any) -> dict[str, Any]:
    """The JSON of a pair's matches: :func:`record` and the resolved config."""
    return {**record(m, inputs), "config": to_dict(config)}


def record(m: Matches, inputs: PairInputs) -> dict[str, Any]:
    """A pair's matches as JSON-ready fields: the image paths and sizes ``(W, H)``, the
    category, ``points_a``/``points_b`` ``(K, 2)`` ``(x, y)``, ``scores (K,)``, ``mutual (K,)``
    and ``flipped``."""
    return {
        "image_a": inputs.name_a,
        "image_b": inputs.name_b,
        "size_a": list(inputs.img_a.size),
        "size_b": list(inputs.img_b.size),
        "category": inputs.category,
        **m.to_dict(),
    }
