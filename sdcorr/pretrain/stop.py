"""SIGINT/SIGTERM during a run: finish the step, write a checkpoint, then stop."""

from __future__ import annotations

from typing import Any

import torch

from .dist import DistInfo


class StopSignals:
    """Context that turns SIGINT/SIGTERM into a flag, so the loop can checkpoint and stop.

    Handlers are installed only in the main thread and restored on exit. A second signal
    while the checkpoint is written is recorded, not acted on, so the write completes.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __enter__(self) -> StopSignals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def agreed(self, info: DistInfo) -> int:
        """The signal number if any rank received one (collective under torchrun), else 0."""
        if not info.distributed:
            return self.signum
        t = torch.tensor(float(self.signum))
        if torch.distributed.get_backend() == "nccl":
            t = t.cuda()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())
