"""Device and dtype resolution (``device="auto"``: cuda, then mps, then cpu)."""

from __future__ import annotations

import torch

from .errors import ConfigError

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` → cuda if available, else mps, else cpu; other names as given."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device '{device}'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"`` → fp16 on CUDA, fp32 elsewhere; names like ``"bf16"`` are parsed.

    A half-precision dtype on a CPU without native kernels for it (:func:`native_dtype`) is
    refused with a :class:`ConfigError`: PyTorch would run every convolution on its slow
    generic path (README, "Speed").
    """
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        try:
            dt = DTYPES[str(dtype).lower()]
        except KeyError:
            raise ConfigError(f"unknown dtype '{dtype}' (valid: {', '.join(DTYPES)})") from None
    if not native_dtype(dt, device):
        name = str(dt).replace("torch.", "")
        raise ConfigError(
            f"{name} on this CPU has no native kernels (oneDNN needs AVX-512 BF16/FP16 or AMX): "
            "its convolutions fall back to PyTorch's generic loops, 40-400x slower than "
            "float32; use fp32"
        )
    return dt


def native_dtype(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether ``dtype`` has native convolution and matrix-product kernels on ``device``.

    CPU: oneDNN's own check (bf16 needs AVX-512 BF16 or AMX, fp16 AVX-512 FP16 or AMX-FP16);
    without it PyTorch runs half-precision convolutions through ``_slow_conv2d_forward``
    (im2col and a generic matrix product). Float32, and every dtype on other devices, count
    as native.
    """
    if device.type != "cpu" or dtype == torch.float32:
        return True
    check = {
        torch.bfloat16: "_is_mkldnn_bf16_supported",
        torch.float16: "_is_mkldnn_fp16_supported",
    }.get(dtype)
    fn = getattr(torch.ops.mkldnn, check, None) if check else None
    return bool(fn()) if fn is not None else False


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """The device of one torchrun rank: a bare ``cuda`` becomes ``cuda:<local_rank>`` (modulo
    the GPUs present); any other device (``cuda:1``, ``cpu``) is kept."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return device
