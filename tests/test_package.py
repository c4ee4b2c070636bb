"""Importing sdcorr is light and side-effect free."""

from __future__ import annotations

import subprocess
import sys


def test_import_loads_no_model_library_and_changes_no_global_state() -> None:
    code = (
        "import sys, torch; g = torch.get_num_threads(); d = torch.get_default_dtype(); "
        "import sdcorr; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('diffusers', 'transformers', 'matplotlib', 'kornia', 'huggingface_hub')]; "
        "assert not heavy, heavy; "
        "assert torch.get_num_threads() == g and torch.get_default_dtype() == d; "
        "assert sdcorr.SDDino and sdcorr.FeatureMap and sdcorr.Matches"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
