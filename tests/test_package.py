"""Importing sdcorr is light and side-effect free; its declared dependencies are the ones it uses."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path


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


# ---------------------------------------------------------------------------- dependencies
REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sdcorr"
MODULE = {"pillow": "PIL", "pyyaml": "yaml", "opencv-python-headless": "cv2",
          "opencv-python": "cv2"}  # fmt: skip
# declared but not imported by sdcorr itself, with the reason
INDIRECT = {"accelerate": "diffusers loads weights with low_cpu_mem_usage only when installed"}


def _project() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()


def _floor(reqs: list[str], name: str) -> tuple[int, ...]:
    (req,) = [r for r in reqs if _name(r) == name]
    return tuple(int(x) for x in req.split(">=")[1].split(",")[0].split("."))


def _imports(files: list[Path]) -> set[str]:
    found: set[str] = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def _files(pretrain: bool) -> list[Path]:
    return [f for f in PACKAGE.rglob("*.py") if ("pretrain" in f.parts) == pretrain]


def test_every_core_dependency_is_imported_by_the_core() -> None:
    used = _imports(_files(pretrain=False))
    for req in _project()["dependencies"]:
        name = _name(req)
        if name not in INDIRECT:
            assert MODULE.get(name, name) in used, f"{name} is declared but never imported"


def test_pretraining_only_packages_are_the_pretrain_extra_and_in_dev() -> None:
    project = _project()
    core = {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    only_pretrain = _imports(_files(pretrain=True)) - _imports(_files(pretrain=False))
    third_party = {"kornia": "kornia", "yaml": "pyyaml"}
    assert {m for m in only_pretrain if m in third_party} == set(third_party)
    for dist in third_party.values():
        assert dist not in core and dist in {_name(r) for r in extras["pretrain"]}
        assert dist in {_name(r) for r in extras["dev"]}  # the test suite trains too


def test_torch_floors_are_the_oldest_versions_with_the_apis_called() -> None:
    """nn.Module.compile appeared in torch 2.2; FSDP2's fully_shard became public in
    torch.distributed.fsdp in 2.6 (pytorch/pytorch#141868)."""
    core_src = "".join(f.read_text() for f in _files(pretrain=False))
    pre_src = "".join(f.read_text() for f in _files(pretrain=True))
    assert re.search(r"\bm\.compile\(", core_src)  # nn.Module.compile in features/accel.py
    assert "from torch.distributed.fsdp import" in pre_src and "fully_shard" in pre_src
    project = _project()
    assert _floor(project["dependencies"], "torch") == (2, 2)
    assert _floor(project["optional-dependencies"]["pretrain"], "torch") == (2, 6)
    assert _floor(project["optional-dependencies"]["dev"], "torch") == (2, 6)
