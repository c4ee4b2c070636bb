"""PCK evaluation of sdcorr (or of any method's saved predictions) on the standard benchmarks.

A launcher of ``sdcorr eval`` (:mod:`sdcorr.commands.eval`): same options, same outputs.

Examples:
    python benchmarks/eval.py --dataset spair --root data/SPair-71k --out runs/spair
    python benchmarks/eval.py --dataset pf-pascal --root data/PF-Pascal --out runs/pfpascal
    torchrun --nproc-per-node 4 benchmarks/eval.py --dataset tss --root data/TSS_CVPR2016 --out r
    python benchmarks/eval.py --dataset pf-willow --root data/PF-Willow --predictions p.jsonl --out o

See the README ("SPair-71k evaluation", "Other benchmarks", "Reproducing published numbers").
"""

from __future__ import annotations

import sys

from sdcorr.commands.eval import main

if __name__ == "__main__":
    sys.exit(main())
