"""Why half precision is (or is not) a CPU speed path here: which kernels a dtype gets.

For fp32, bf16 and fp16 it times one dense matrix product and one 3×3 convolution (the VAE's
commonest op) and names the ATen op the convolution dispatched to (``mkldnn_convolution`` =
oneDNN's kernels; ``_slow_conv2d_forward`` = PyTorch's generic im2col loops), beside oneDNN's
own support check (:func:`sdcorr.device.native_dtype`) and the CPU's vector capability::

    PYTHONPATH=. python benchmarks/dtype_probe.py [--threads 2] [--size 512] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile

from sdcorr.device import native_dtype

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _seconds(fn, reps: int) -> float:
    """Mean seconds of ``fn()`` over ``reps`` calls, after one untimed call."""
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def _conv_op(conv: torch.nn.Conv2d, x: torch.Tensor) -> str:
    """The lowest convolution ATen op one call of ``conv(x)`` ran."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        conv(x)
    names = [e.key for e in prof.key_averages()]
    for op in ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d"):
        if op in names:
            return op
    return next((n for n in names if "conv" in n), "?")


def probe(dtype: torch.dtype, size: int, channels: int, reps: int) -> dict:
    """GFLOP/s of a ``size``² matrix product and of a 3×3 convolution (``channels`` in and
    out, a 64² map) in ``dtype``, with the convolution's ATen op."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(dtype)
    x = torch.randn(1, channels, 64, 64, dtype=dtype)
    with torch.inference_mode():
        mm_s = _seconds(lambda: a @ b, reps)
        conv_s = _seconds(lambda: conv(x), reps)
        op = _conv_op(conv, x)
    conv_flops = 2 * channels * channels * 9 * 64 * 64
    return {"native": native_dtype(dtype, torch.device("cpu")), "conv_op": op,
            "mm_gflops": round(2 * size**3 / mm_s / 1e9, 2),
            "conv_gflops": round(conv_flops / conv_s / 1e9, 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=512, help="matrix side (default 512)")
    p.add_argument("--channels", type=int, default=128, help="convolution channels")
    p.add_argument("--json", default=None, help="also write the report here")
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    report = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads}
    try:
        for name, dtype in DTYPES.items():
            reps = 3 if dtype == torch.float32 else 1  # half precision may be 100x slower
            report[name] = probe(dtype, args.size, args.channels, reps)
            print(name, json.dumps(report[name]), flush=True)
    finally:  # an in-process caller (the tests) keeps its thread count
        torch.set_num_threads(threads)
    for name in ("bf16", "fp16"):
        slow = report["fp32"]["conv_gflops"] / max(report[name]["conv_gflops"], 1e-9)
        report[name]["conv_slowdown_vs_fp32"] = round(slow, 1)
    print("cpu capability:", report["cpu_capability"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
