"""``python -m sdcorr.pretrain ...`` (what ``torchrun --nproc-per-node N -m sdcorr.pretrain``
runs on every rank); same arguments as ``sdcorr pretrain``."""

from __future__ import annotations

import sys

from ..commands.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
