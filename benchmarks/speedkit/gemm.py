"""The machine's dense matrix-multiply rate, measured in the benchmark's own process.

Every speed figure of ``benchmarks/speed.py`` is also given as a ``gemm_fraction``: the FLOP/s
a stage achieved divided by the rate of one large square matrix product (``size`` x ``size``,
fp32 by default) measured in the same process right before and right after that stage. On a
machine shared with other jobs both numbers slow down together, so the fraction stays
comparable where absolute seconds do not, and the probes before and after show a load change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class GemmProbe:
    """Measures ``C = A @ B`` with ``A, B`` of ``size x size`` in ``dtype`` on ``device``.

    Calling the probe runs ``reps`` products (after one untimed product the first time) and
    returns GFLOP/s (``2 * size**3`` FLOPs per product).
    """

    device: torch.device
    dtype: torch.dtype = torch.float32
    size: int = 2048
    reps: int = 3

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        n = self.size
        self._a = torch.randn(n, n, generator=g).to(self.device, self.dtype)
        self._b = torch.randn(n, n, generator=g).to(self.device, self.dtype)
        self._warm = False

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def __call__(self) -> float:
        """One measurement in GFLOP/s."""
        if not self._warm:
            torch.mm(self._a, self._b)
            self._warm = True
        self._sync()
        t = time.perf_counter()
        for _ in range(self.reps):
            torch.mm(self._a, self._b)
        self._sync()
        dt = time.perf_counter() - t
        return 2 * self.size**3 * self.reps / dt / 1e9


def default_size(device: torch.device) -> int:
    """Matrix side of the probe: 2048 on CPU (about 0.1 s a product at 150 GFLOP/s), 8192 on
    CUDA (large enough to reach a GPU's rate)."""
    return 8192 if device.type == "cuda" else 2048


class GemmLog:
    """The probes of one run and the reference rate of each stage.

    A stage segment booked between probe ``k - 1`` and probe ``k`` is referred to the mean of
    the two; a stage's reference is the time-weighted mean over its segments; time outside any
    stage (``other``) is referred to the mean of all probes.
    """

    def __init__(self, probe: GemmProbe) -> None:
        self.probe = probe
        self.probes: list[tuple[str, float, float]] = []  # (after stage, at s, GFLOP/s)
        self.seconds = 0.0  # spent probing (excluded from the run's wall time)
        self.segments: dict[str, list[tuple[float, int]]] = {}

    def take(self, label: str, at: float) -> None:
        """Probe now; ``label`` names the stage just finished, ``at`` the run's clock."""
        t = time.perf_counter()
        rate = self.probe()
        self.seconds += time.perf_counter() - t
        self.probes.append((label, round(at, 3), round(rate, 2)))

    def note(self, stage: str, seconds: float) -> None:
        """A segment of ``stage`` just ended (the next probe is the one after it)."""
        self.segments.setdefault(stage, []).append((seconds, len(self.probes)))

    def mean(self) -> float:
        """Mean of all probes (GFLOP/s)."""
        return sum(p[2] for p in self.probes) / max(len(self.probes), 1)

    def reference(self, stage: str) -> float:
        """Time-weighted GEMM rate around ``stage`` (GFLOP/s)."""
        segs = self.segments.get(stage, [])
        total = sum(dt for dt, _ in segs)
        if not segs or total <= 0:
            return self.mean()
        rates = [p[2] for p in self.probes]
        last = len(rates) - 1
        bracket = [(rates[max(k - 1, 0)] + rates[min(k, last)]) / 2 for _, k in segs]
        return sum(dt * r for (dt, _), r in zip(segs, bracket, strict=True)) / total

    def add_to(self, report: dict) -> None:
        """Add ``gemm_gflops``/``gemm_fraction`` to every stage of a clock report and the run's
        ``gemm`` (probes, time-weighted reference rate), ``gemm_fraction`` and
        ``gemm_fraction_range`` (the run's FLOP/s over the fastest and the slowest probe)."""
        stages, wall = report["stages"], report["wall_s"]
        for name, st in stages.items():
            st["gemm_gflops"] = round(self.reference(name), 2)
        weighted = sum(st["seconds"] * st["gemm_gflops"] for st in stages.values())
        rates = [p[2] for p in self.probes]
        report["gemm"] = {
            "dtype": str(self.probe.dtype).replace("torch.", ""),
            "size": self.probe.size,
            "gflops": round(weighted / wall, 2) if wall > 0 else round(self.mean(), 2),
            "gflops_min": min(rates),
            "gflops_max": max(rates),
            "probes": self.probes,
            "probe_seconds": round(self.seconds, 3),
        }
        refresh_fractions(report)


def _fraction(flops: float, seconds: float, gflops: float) -> float:
    if seconds <= 0 or gflops <= 0:
        return 0.0
    return round(flops / seconds / 1e9 / gflops, 4)


def refresh_fractions(report: dict) -> None:
    """Recompute the ``gemm_fraction`` figures of a clock report whose FLOPs were replaced
    (FLOPs counted in a second run), from the reference rates it already holds."""
    g = report["gemm"]
    for st in report["stages"].values():
        st["gemm_fraction"] = _fraction(st["flops"], st["seconds"], st.get("gemm_gflops", 0))
    flops, wall = report["flops"], report["wall_s"]
    report["gemm_fraction"] = _fraction(flops, wall, g["gflops"])
    slowest, fastest = g["gflops_min"], g["gflops_max"]
    report["gemm_fraction_range"] = [
        _fraction(flops, wall, fastest),
        _fraction(flops, wall, slowest),
    ]
