"""The measured work: one pair (a) and a workload of pairs over recurring images (b).

Raw features stay on the compute device, so the per-pair co-PCA (float64) and the similarity
(fp32) run on the GPU when there is one.

Both procedures share the loaded models and the same fusion (per-pair co-PCA) and matching
code; they differ in how features are extracted (:class:`Ours`: tiles and images batched, early
exit, cached prompt, per-image reuse through the SPair runner's feature cache, chunked
similarity; :class:`Baseline`: :class:`~speedkit.baseline.ReferenceProcedure`, every pair from
scratch, one unchunked similarity matrix).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdcorr.config import FusionConfig, MatchConfig, PipelineConfig
from sdcorr.features.dino import ViTExtractor
from sdcorr.features.sd import SDFeatureExtractor
from sdcorr.fusion import fuse_pair
from sdcorr.image import load_image
from sdcorr.match.dense import DenseFlow, match_dense
from sdcorr.match.sparse import transfer_points
from sdcorr.pipeline import ImageFeatures, SDDino
from sdcorr.types import FeatureMap

from .baseline import ReferenceProcedure
from .clock import StageClock
from .gemm import GemmProbe, refresh_fractions

CATEGORY = "cat"
SIZES = ((500, 375), (375, 500), (500, 333), (480, 480), (333, 500), (500, 400))


# ---------------------------------------------------------------------- inputs
def make_images(n: int, folder: str | Path | None = None, seed: int = 0) -> list[Path]:
    """``n`` deterministic synthetic JPEGs of SPair-like sizes (smooth colour fields)."""
    folder = Path(folder or tempfile.mkdtemp(prefix="sdcorr-speed-img-"))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        path = folder / f"img{i:02d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def workload_pairs(n_pairs: int, n_images: int) -> list[tuple[int, int]]:
    """``n_pairs`` pairs over ``n_images`` images, every image recurring as in SPair-71k.

    SPair pairs images of one category with each other, so an image appears in many pairs: the
    pairs are all ``i < j`` combinations in order, cycled if more are asked for (6 pairs over
    4 images: every combination, each image in 3 pairs).
    """
    combos = list(itertools.combinations(range(n_images), 2))
    if not combos:
        raise ValueError("a workload needs at least 2 images")
    return [combos[k % len(combos)] for k in range(n_pairs)]


def keypoints(path: Path, k: int, seed: int = 0) -> torch.Tensor:
    """``(k, 2)`` deterministic points ``(x, y)`` inside the image at ``path``."""
    w, h = Image.open(path).size
    g = torch.Generator().manual_seed(seed)
    return torch.rand(k, 2, generator=g, dtype=torch.float64) * torch.tensor([w - 1, h - 1])


# ---------------------------------------------------------------------- procedures
class Ours:
    """The library path: ``SDDino.extract`` (batched, early exit, cached prompts)."""

    name = "ours"
    reuse = True

    def __init__(self, sd: SDFeatureExtractor, dino: ViTExtractor, chunk: int = 4096) -> None:
        self.sd, self.dino = sd, dino
        cfg = PipelineConfig(sd=sd.config, dino=dino.config)
        self.pipe = SDDino(cfg, sd, dino)
        self.match_cfg = MatchConfig(chunk=chunk)
        self.decoder = None
        self.channels_last = sd.channels_last  # the layout this procedure runs in

    def layout(self) -> AbstractContextManager[None]:
        """The (possibly shared) SD models in this procedure's layout while it runs."""
        return _layout(self.sd, self.channels_last)

    def extract_pair(self, images: Sequence[Any], category: str | None) -> list[ImageFeatures]:
        """Both images (all their tiles) in one batch; features kept on the compute device."""
        return [f.to(self.sd.device) for f in self.pipe.extract(list(images), category)]

    def extract_one(self, path: Path, category: str | None) -> ImageFeatures:
        """One image (what the SPair runner's cache calls), kept on the compute device."""
        return self.pipe.extract([path], category)[0].to(self.sd.device)


class Baseline:
    """The reference procedure; the similarity is one unchunked matrix."""

    name = "baseline"
    reuse = False

    def __init__(
        self, sd: SDFeatureExtractor, dino: ViTExtractor, decoder: tuple[Any, Any] | None
    ) -> None:
        self.sd, self.dino = sd, dino
        self.ref = ReferenceProcedure(sd, dino, decoder)
        self.match_cfg = MatchConfig(chunk=1 << 30)
        self.decoder = self.ref.decoder[1] if self.ref.decoder is not None else None

    def layout(self) -> AbstractContextManager[None]:
        """The reference runs the plain (NCHW) layout: the shared SD models are put back in it
        while it runs."""
        return _layout(self.sd, False)

    def extract_pair(self, images: Sequence[Any], category: str | None) -> list[ImageFeatures]:
        """Each image on its own."""
        return [self.extract_one(im, category) for im in images]

    def extract_one(self, path: Path, category: str | None) -> ImageFeatures:
        """One image (features on the compute device, so fusion and matching run there)."""
        return self.ref.extract(path, category).to(self.sd.device)


@contextmanager
def _layout(sd: SDFeatureExtractor, channels_last: bool) -> Iterator[None]:
    before = sd.channels_last
    sd.set_channels_last(channels_last)
    try:
        yield
    finally:
        sd.set_channels_last(before)


def watch_models(clock: StageClock, proc: Ours | Baseline) -> None:
    """Attribute the model forwards of ``proc`` to their stages."""
    clock.watch(proc.sd.vae.encoder, "vae_encode")
    clock.watch(proc.sd.unet, "unet")
    clock.watch(proc.sd.text_encoder, "text_encoder")
    clock.watch(proc.dino.model, "dino")
    if proc.decoder is not None:
        clock.watch(proc.decoder, "vae_decode")


def fuse(fa: ImageFeatures, fb: ImageFeatures) -> tuple[FeatureMap, FeatureMap]:
    """Per-pair co-PCA and fusion (the faithful default), identical for both procedures."""
    return fuse_pair(fa.sd(), fb.sd(), fa.maps["dino"], fb.maps["dino"], FusionConfig())


def match(
    fa: FeatureMap, fb: FeatureMap, points: torch.Tensor, cfg: MatchConfig
) -> tuple[Any, DenseFlow]:
    """Keypoint transfer A → B and the dense B → A flow (what the swap GIF needs)."""
    return transfer_points(fa, fb, points, cfg), match_dense(fa, fb, None, cfg)


# ---------------------------------------------------------------------- measurements
@dataclass
class Run:
    """What one measured run leaves: its report and the tensors the checks compare."""

    report: dict[str, Any]
    raw: dict[int, ImageFeatures] = field(default_factory=dict)
    fused: list[tuple[FeatureMap, FeatureMap]] = field(default_factory=list)
    flows: list[DenseFlow] = field(default_factory=list)
    matches: list[Any] = field(default_factory=list)


def measure_pair(
    proc: Ours | Baseline,
    paths: Sequence[Path],
    points: torch.Tensor,
    device: torch.device,
    count_flops: bool = True,
    probe: GemmProbe | None = None,
) -> Run:
    """(a) One pair: load, extract both images, fuse, match (``probe``: GEMM rate around
    every stage, see :class:`~speedkit.clock.StageClock`)."""
    with proc.layout(), StageClock(device, count_flops, probe) as clock:
        watch_models(clock, proc)
        with clock.stage("load"):
            images = [load_image(p) for p in paths]
        fa, fb = proc.extract_pair(images, CATEGORY)
        with clock.stage("fusion"):
            fused = fuse(fa, fb)
        with clock.stage("matching"):
            m, flow = match(*fused, points, proc.match_cfg)
    return Run(clock.report(), {0: fa, 1: fb}, [fused], [flow], [m])


def measure_workload(
    proc: Ours | Baseline,
    paths: Sequence[Path],
    pairs: Sequence[tuple[int, int]],
    points: Callable[[int], torch.Tensor],
    device: torch.device,
    make_cache: Callable[..., Any],
    count_flops: bool = True,
    probe: GemmProbe | None = None,
) -> Run:
    """(b) Pairs over recurring images; ``Ours`` extracts each image once through the cache."""
    run = Run({})
    with proc.layout(), StageClock(device, count_flops, probe) as clock:
        watch_models(clock, proc)
        cache = make_cache(proc.extract_one, size=len(paths)) if proc.reuse else None
        for i, j in pairs:
            if cache is not None:
                fa, fb = cache.get(paths[i], CATEGORY), cache.get(paths[j], CATEGORY)
            else:
                fa, fb = proc.extract_pair([paths[i], paths[j]], CATEGORY)
            run.raw.setdefault(i, fa)
            run.raw.setdefault(j, fb)
            with clock.stage("fusion"):
                fused = fuse(fa, fb)
            with clock.stage("matching"):
                m, flow = match(*fused, points(i), proc.match_cfg)
            run.flows.append(flow)
            run.matches.append(m)
    run.report = clock.report()
    if cache is not None:
        run.report["cache"] = dict(getattr(cache, "stats", {}))
    return run


def measure_gif(paths: Sequence[Path], flow: DenseFlow, device: torch.device, out: Path) -> dict:
    """The swap GIF of a pair (same code for every procedure, so measured once)."""
    from sdcorr import viz

    with StageClock(device, count_flops=False) as clock, clock.stage("gif"):
        a, b = (np.asarray(load_image(p)) for p in paths)
        px, valid = flow.to_pixels("nearest").numpy(), flow.valid_pixels().numpy()
        frames = viz.swap_frames(a, b, px, mask_b=valid, max_side=256)
        viz.save_gif(frames, out, fps=30)
    return clock.report()["stages"]["gif"]


def timed_then_counted(
    measure: Callable[[bool, GemmProbe | None], Run], separate: bool, probe: GemmProbe | None
) -> Run:
    """Run ``measure(count_flops, probe)``; with ``separate``, time a run without the FLOP
    counter (its per-op Python dispatch would dominate fast GPU kernels) and take the FLOPs of
    a second, counted (unprobed) run of the same work."""
    if not separate:
        return measure(True, probe)
    timed = measure(False, probe)
    counted = measure(True, None).report
    stages = timed.report["stages"]
    for name, st in counted["stages"].items():
        stages.setdefault(name, {**st, "seconds": 0.0})["flops"] = st["flops"]
    timed.report["flops"] = counted["flops"]
    timed.report["flops_from"] = "a second, counted run of the same work"
    if probe is not None:
        refresh_fractions(timed.report)
    return timed
