"""SPair-71k PCK evaluation: a short alias of ``benchmarks/eval.py --dataset spair``.

Examples:
    python benchmarks/spair.py --root data/SPair-71k --split test --preset sd-dino --out runs/a
    torchrun --nproc-per-node 4 benchmarks/spair.py --root data/SPair-71k --out runs/sd-dino
    python benchmarks/spair.py --root data/SPair-71k --predictions preds.jsonl --out runs/other

Every option of ``benchmarks/eval.py`` except ``--dataset`` applies. See the README
("SPair-71k evaluation") for the dataset layout, the PCK definitions and the output files.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path


def _eval_module():
    spec = importlib.util.spec_from_file_location(
        "sdcorr_benchmark_eval", Path(__file__).with_name("eval.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: Sequence[str] | None = None) -> int:
    """``benchmarks/eval.py --dataset spair ARGV``: 0 on success, 2 on a user error."""
    return _eval_module().main(argv, dataset="spair")


if __name__ == "__main__":
    sys.exit(main())
