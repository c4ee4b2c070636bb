"""Capture intermediate outputs of upstream models with forward hooks, with early exit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class _StopForward(Exception):
    """Raised from a hook once every requested output is captured."""


def _as_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return _as_tensor(out[0])
    sample = getattr(out, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    raise TypeError(f"cannot take a tensor from a module output of type {type(out).__name__}")


def capture(
    run: Callable[[], Any], modules: dict[str, nn.Module], early_exit: bool = True
) -> dict[str, torch.Tensor]:
    """Run ``run()`` and return the outputs of ``modules`` (first output of a tuple/``.sample``).

    Args:
        run: calls the model's forward.
        modules: ``{name: submodule}`` to hook.
        early_exit: abort the forward as soon as every module has produced its output, so no
            later block runs.

    Returns:
        ``{name: tensor}`` for every module.
    """
    captured: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_mod: nn.Module, _args: Any, out: Any) -> None:
            captured[name] = _as_tensor(out)
            if early_exit and len(captured) == len(modules):
                raise _StopForward

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items()]
    try:
        run()
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = sorted(set(modules) - set(captured))
    if missing:
        raise RuntimeError(f"hooked modules did not run: {missing}")
    return captured
