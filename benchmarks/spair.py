"""SPair-71k PCK evaluation: ``sdcorr eval --dataset spair`` (``benchmarks/eval.py`` too).

Examples:
    python benchmarks/spair.py --root data/SPair-71k --split test --preset sd-dino --out runs/a
    torchrun --nproc-per-node 4 benchmarks/spair.py --root data/SPair-71k --out runs/sd-dino
    python benchmarks/spair.py --root data/SPair-71k --predictions preds.jsonl --out runs/other

Every option of ``sdcorr eval`` except ``--dataset`` applies. See the README ("SPair-71k
evaluation") for the dataset layout, the PCK definitions and the output files.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sdcorr.commands.eval import main as eval_main


def main(argv: Sequence[str] | None = None) -> int:
    """``sdcorr eval --dataset spair ARGV``: 0 on success, 2 on a user error."""
    return eval_main(argv, dataset="spair")


if __name__ == "__main__":
    sys.exit(main())
