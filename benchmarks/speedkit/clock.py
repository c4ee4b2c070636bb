"""Per-stage wall time, FLOPs and peak memory (host RSS, CUDA) of a run.

One :class:`StageClock` is active around a whole procedure. Stages are entered either
explicitly (``with clock.stage("fusion"): ...``) or by forward hooks on the top-level models
(:meth:`StageClock.watch`), so a stage that runs interleaved with others (the VAE and the
U-Net alternate per chunk of tiles) adds up correctly. FLOPs come from one
counter with ``torch.utils.flop_counter``'s formulas kept open for the whole run: a stage's FLOPs are
the counter's growth while it is active. Time not inside any stage is reported as ``other``.

With a ``probe`` (:class:`speedkit.gemm.GemmProbe`) the clock also measures the machine's matrix
product rate at the start, after every top-level stage of at least ``probe_min_flops`` and at
the end, outside the timed and counted work; each stage's ``gemm_fraction`` is its FLOP/s over
the mean of the probes just before and just after it (time-weighted over its occurrences).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_flop_count, shape_wrapper

from .gemm import GemmLog


def _sdpa_cpu_flops(query, key, value, *args: Any, **kwargs: Any) -> int:
    """FLOPs of the CPU flash-attention kernel (not in torch's registry): as the CUDA one."""
    return sdpa_flop_count(query, key, value)


def _custom_flops() -> dict[Any, Any]:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_cpu_flops} if op is not None else {}


def flop_counter() -> FlopCounterMode:
    """A silent FLOP counter that also counts PyTorch's CPU SDPA kernel."""
    return FlopCounterMode(display=False, custom_mapping=_custom_flops())


class LeanFlopCounter(TorchDispatchMode):
    """Total FLOPs with ``torch.utils.flop_counter``'s formulas, without its module tracking.

    ``FlopCounterMode`` also tracks the module hierarchy (hooks on every module call), which
    costs far more per op than the counting itself; a benchmark only needs the running total.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.paused = False  # (a GEMM probe runs under the mode without being counted)
        extra = {k: shape_wrapper(v) for k, v in _custom_flops().items()}
        self.registry = {**flop_registry, **extra}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.paused:
            return func(*args, **kwargs)
        if func is not torch.ops.prim.device.default:
            # as FlopCounterMode: composite ops (e.g. aten.linear under inference mode) are
            # decomposed so the counted kernels (addmm, ...) are seen
            with self:
                r = func.decompose(*args, **kwargs)
            if r is not NotImplemented:
                return r
        out = func(*args, **kwargs)
        formula = self.registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out

    def get_total_flops(self) -> int:
        """FLOPs counted so far."""
        return self.total


class _RssSampler(threading.Thread):
    """Samples the process RSS every ``period`` s (50 ms) and keeps the maximum per current stage."""

    def __init__(self, clock: StageClock, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc, self.clock, self.period = psutil.Process(), clock, period
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.clock.note_rss(self.proc.memory_info().rss)
            time.sleep(self.period)


class StageClock:
    """Collects ``{stage: {seconds, flops, calls, peak_host_mb, peak_cuda_mb}}`` for one run.

    Args:
        device: the compute device (CUDA is synchronised at every stage boundary).
        count_flops: keep a ``FlopCounterMode`` open while the clock runs.
        probe: a :class:`~speedkit.gemm.GemmProbe` (``None``: no GEMM rate, no fractions).
        probe_min_flops: probe after a top-level stage only if it ran at least these FLOPs.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        count_flops: bool = True,
        probe: Callable[[], float] | None = None,
        probe_min_flops: float = 1e9,
    ) -> None:
        self.device = torch.device(device)
        self.count_flops = count_flops
        self.seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.peak_host: dict[str, int] = defaultdict(int)
        self.peak_cuda: dict[str, int] = defaultdict(int)
        self.current: str = "other"
        self._stack: list[tuple[str, float, int]] = []
        self._handles: list[Any] = []
        self._counter: LeanFlopCounter | None = None
        self._sampler: _RssSampler | None = None
        self.gemm = GemmLog(probe) if probe is not None else None
        self.probe_min_flops = probe_min_flops
        self._top_f0 = 0
        self.wall = 0.0

    # ------------------------------------------------------------------ plumbing
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _total_flops(self) -> int:
        return self._counter.get_total_flops() if self._counter is not None else 0

    def note_rss(self, rss: int) -> None:
        """Record a host RSS sample for the current stage (called by the sampler thread)."""
        name = self.current
        if rss > self.peak_host[name]:
            self.peak_host[name] = rss

    def enter(self, name: str) -> None:
        """Start stage ``name`` (nested stages pause their parent)."""
        self._sync()
        now = time.perf_counter()
        if self._stack:
            parent, start, f0 = self._stack[-1]
            self._book(parent, now - start, self._total_flops() - f0)
        if not self._stack:
            self._top_f0 = self._total_flops()
        self._stack.append((name, now, self._total_flops()))
        self.current = name
        self.calls[name] += 1
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def exit(self) -> None:
        """End the innermost stage (its parent resumes)."""
        self._sync()
        now = time.perf_counter()
        name, start, f0 = self._stack.pop()
        self._book(name, now - start, self._total_flops() - f0)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            self.peak_cuda[name] = max(self.peak_cuda[name], peak)
        if self._stack:
            parent, _, _ = self._stack.pop()
            self._stack.append((parent, now, self._total_flops()))
        self.current = self._stack[-1][0] if self._stack else "other"
        if not self._stack and self._total_flops() - self._top_f0 >= self.probe_min_flops:
            self._probe(name)

    def _book(self, name: str, dt: float, flops: int) -> None:
        self.seconds[name] += dt
        self.flops[name] += flops
        if self.gemm is not None:
            self.gemm.note(name, dt)

    def _probe(self, label: str) -> None:
        """Measure the GEMM rate now, neither timed nor counted as part of the run."""
        if self.gemm is None:
            return
        self._sync()
        at = time.perf_counter() - self._t0 - self.gemm.seconds
        if self._counter is not None:
            self._counter.paused = True
        try:
            self.gemm.take(label, at)
        finally:
            if self._counter is not None:
                self._counter.paused = False

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """``with clock.stage("fusion"): ...``."""
        self.enter(name)
        try:
            yield
        finally:
            self.exit()

    def watch(self, module: nn.Module, name: str) -> None:
        """Count every forward of ``module`` as stage ``name`` (also when it raises)."""
        self._handles.append(module.register_forward_pre_hook(lambda *_: self.enter(name)))
        self._handles.append(module.register_forward_hook(lambda *_: self.exit(), always_call=True))

    # ------------------------------------------------------------------ run
    def __enter__(self) -> StageClock:
        """Start the clock (FLOP counter, RSS sampler, wall time)."""
        if self.count_flops:
            self._counter = LeanFlopCounter()
            self._counter.__enter__()
        self._sampler = _RssSampler(self)
        self._sampler.start()
        self._sync()
        self._t0 = time.perf_counter()
        self._f0 = self._total_flops()
        self._probe("start")
        return self

    def __exit__(self, *exc: Any) -> None:
        """Stop the clock and remove the hooks; unattributed time goes to ``other``."""
        self._probe("end")
        self._sync()
        self.wall = time.perf_counter() - self._t0 - (self.gemm.seconds if self.gemm else 0.0)
        total_flops = self._total_flops() - self._f0
        for h in self._handles:
            h.remove()
        if self._sampler is not None:
            self._sampler.stop.set()
            self._sampler.join()
        if self._counter is not None:
            self._counter.__exit__(*exc)
        staged = {k: v for k, v in self.seconds.items() if k != "other"}
        self.seconds["other"] = max(0.0, self.wall - sum(staged.values()))
        staged_flops = sum(v for k, v in self.flops.items() if k != "other")
        self.flops["other"] = max(0, total_flops - staged_flops)

    def report(self) -> dict[str, Any]:
        """``{"wall_s", "flops", "stages": {name: {...}}, "peak_host_mb", "peak_cuda_mb"}``."""
        names = sorted(set(self.seconds) | set(self.flops))
        mb = 1 / 2**20
        stages = {
            n: {
                "seconds": round(self.seconds.get(n, 0.0), 4),
                "flops": int(self.flops.get(n, 0)),
                "calls": self.calls.get(n, 0),
                "peak_host_mb": round(self.peak_host.get(n, 0) * mb, 1),
                "peak_cuda_mb": round(self.peak_cuda.get(n, 0) * mb, 1),
            }
            for n in names
        }
        out = {
            "wall_s": round(self.wall, 4),
            "flops": int(sum(self.flops.values())),
            "peak_host_mb": round(max(self.peak_host.values(), default=0) * mb, 1),
            "peak_cuda_mb": round(max(self.peak_cuda.values(), default=0) * mb, 1),
            "stages": stages,
        }
        if self.gemm is not None:
            self.gemm.add_to(out)
        return out
