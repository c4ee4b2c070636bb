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
    to the plain contiguous layout), in place, with :class:`ChannelsLastGroupNorm` for its
    GroupNorms while channels-last. A convolution with channels-last weights computes in that
    layout whatever its input's, so the activations follow."""
    for m in module.modules():
        if type(m) in (nn.GroupNorm, ChannelsLastGroupNorm):
            m.__class__ = ChannelsLastGroupNorm if on else nn.GroupNorm
    return module.to(memory_format=torch.channels_last if on else torch.contiguous_format)


def group_norm_channels_last(
    x: torch.Tensor,
    groups: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """``F.group_norm`` of a channels-last ``(N, C, H, W)`` float32 tensor, moments in two passes.

    PyTorch's channels-last GroupNorm kernel on CPU loses precision in its moments (relative
    errors up to 3e-5 against float64 on 512² VAE activations, against 1e-7 for the NCHW
    kernel), enough to move SD features by 2e-4. Here the mean comes from per-channel sums
    and the variance from the centred squares (two passes, each a fast reduction over the
    pixel axis in the channels-last memory order); the output is ``x * scale + shift`` per
    channel, the NCHW kernel's formula, written channels-last.

    Returns:
        ``(N, C, H, W)`` in channels-last memory.
    """
    n, c, h, w = x.shape
    cg = c // groups
    v = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: channels-last memory order
    mean = v.mean(1).view(n, groups, cg).mean(-1)  # (n, groups)
    mean_c = mean.repeat_interleave(cg, dim=1)  # (n, c)
    var = (v - mean_c[:, None]).square_().mean(1).view(n, groups, cg).mean(-1)
    scale = torch.rsqrt(var + eps).repeat_interleave(cg, dim=1)
    if weight is not None:
        scale = scale * weight
    shift = -mean_c * scale
    if bias is not None:
        shift = shift + bias
    out = torch.addcmul(shift[:, None, None], x.permute(0, 2, 3, 1), scale[:, None, None])
    return out.permute(0, 3, 1, 2)


class ChannelsLastGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that normalises channels-last float32 input with
    :func:`group_norm_channels_last` (any other input: the stock kernel). Swapped in (class
    only: same parameters, same hooks) by :func:`to_channels_last`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` → same shape."""
        plain = x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last)
        if x.dim() != 4 or x.dtype != torch.float32 or plain:
            return super().forward(x)
        return group_norm_channels_last(x, self.num_groups, self.weight, self.bias, self.eps)


def cpu_or(device: torch.device, on_cpu: int, elsewhere: int) -> int:
    """A batch-size default by device: on CPU one image (DINO) or one tile (VAE) per forward
    measured faster than batches (README "Speed"); batches elsewhere."""
    return on_cpu if device.type == "cpu" else elsewhere


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
