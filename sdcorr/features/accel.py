"""Speed switches for the extractors' models: ``channels_last`` and ``torch.compile``.

Both switches leave the numbers unchanged up to kernel rounding. ``channels_last`` is the CPU
default of :class:`~sdcorr.features.sd.SDFeatureExtractor` (oneDNN's convolutions run at about
0.95 of the machine's matrix-product rate in that layout against 0.6-0.75 in NCHW; README,
"Speed") and opt-in elsewhere. ``torch.compile`` is opt-in and applied block by block
(``nn.Module.compile`` on the heavy blocks), never to a hooked module or one of its ancestors,
so the forward hooks and the early exit of :func:`sdcorr.features.hooks.capture` keep running
eagerly between compiled blocks.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

# Class names of the blocks worth compiling (diffusers U-Net/VAE, transformers DINOv2).
COMPILE_BLOCKS = (
    "ResnetBlock2D",
    "BasicTransformerBlock",
    "Downsample2D",
    "Upsample2D",
    "Dinov2Layer",
    "Dinov2WithRegistersLayer",
)


def to_channels_last(module: nn.Module, on: bool = True) -> nn.Module:
    """Store the 4-D (conv) weights of ``module`` in ``torch.channels_last`` (``on=False``: back
    to the plain contiguous layout), in place. A convolution with channels-last weights
    computes in that layout whatever its input's, so the activations follow."""
    return module.to(memory_format=torch.channels_last if on else torch.contiguous_format)


def prefers_channels_last(device: torch.device) -> bool:
    """The default layout of the SD models' convolutions: channels-last on CPU (measured faster,
    README "Speed"), plain elsewhere (opt-in through ``optimize``)."""
    return device.type == "cpu"


def compile_blocks(
    module: nn.Module,
    keep_eager: Iterable[nn.Module] = (),
    block_types: tuple[str, ...] = COMPILE_BLOCKS,
    backend: str | None = None,
    mode: str | None = None,
) -> int:
    """``torch.compile`` every block of ``module`` whose class is in ``block_types``, in place.

    Args:
        module: the model (U-Net, VAE, ViT).
        keep_eager: hooked modules; they and their ancestors stay eager, so hooks fire (and
            may stop the forward) outside compiled code.
        block_types: class names of the blocks to compile.
        backend: ``torch.compile`` backend (``None``: inductor; ``"eager"`` checks the wiring
            without a compiler).
        mode: ``torch.compile`` mode (e.g. ``"max-autotune-no-cudagraphs"``).

    Returns:
        The number of blocks compiled.
    """
    hooked = {id(m) for m in keep_eager}
    eager = set(hooked)
    for name, m in module.named_modules():
        if id(m) in hooked:
            eager.update(id(a) for a in _ancestors(module, name))
    kwargs = {"backend": backend or "inductor", "dynamic": False}
    if mode is not None:
        kwargs["mode"] = mode
    n = 0
    for m in module.modules():
        if type(m).__name__ in block_types and id(m) not in eager:
            m.compile(**kwargs)
            n += 1
    return n


def _ancestors(root: nn.Module, name: str) -> list[nn.Module]:
    parts = name.split(".") if name else []
    return [root.get_submodule(".".join(parts[:i])) for i in range(len(parts))]
