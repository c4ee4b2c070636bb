"""``benchmarks/dtype_probe.py`` names the kernel path each dtype takes, as oneDNN's check says."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "dtype_probe.py"


def _probe():
    spec = importlib.util.spec_from_file_location("dtype_probe", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_ties_each_dtype_to_its_convolution_path(tmp_path) -> None:
    out = tmp_path / "probe.json"
    assert _probe().main(["--size", "32", "--channels", "16", "--threads", "1",
                          "--json", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["fp32"]["native"] and report["fp32"]["conv_op"] == "aten::mkldnn_convolution"
    for name in ("bf16", "fp16"):
        native, op = report[name]["native"], report[name]["conv_op"]
        # where oneDNN has no kernel for the dtype, PyTorch's generic im2col loops run instead
        assert op == ("aten::mkldnn_convolution" if native else "aten::_slow_conv2d_forward")
        assert report[name]["mm_gflops"] > 0 and report[name]["conv_slowdown_vs_fp32"] > 0
