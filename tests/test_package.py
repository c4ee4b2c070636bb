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


# torch APIs newer than torch 2.0 that sdcorr may call, with the release that made them public
# (a call of an API missing here is not checked: add it when the code starts to use it)
TORCH_SINCE: dict[str, tuple[int, int]] = {
    "nn.Module.compile": (2, 2),
    "torch.distributed.device_mesh.init_device_mesh": (2, 2),
    "torch.distributed.checkpoint.state_dict": (2, 2),
    "torch.serialization.get_unsafe_globals_in_checkpoint": (2, 5),
    "torch.distributed.fsdp.fully_shard": (2, 6),  # public there since 2.6 (pytorch#141868)
    "torch.distributed.fsdp.MixedPrecisionPolicy": (2, 6),
}
# standard-library modules newer than Python 3.10, with the release that added them
STDLIB_SINCE = {"tomllib": (3, 11), "wsgiref.types": (3, 11), "dbm.sqlite3": (3, 13),
                "annotationlib": (3, 14), "compression": (3, 14)}  # fmt: skip


def _torch_apis(files: list[Path]) -> set[str]:
    """The :data:`TORCH_SINCE` keys that ``files`` use (imports, dotted names, ``m.compile()``
    on a module)."""
    used: set[str] = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Attribute):
                names = [ast.unparse(node)]
                if node.attr == "compile" and ast.unparse(node.value) not in ("re", "torch"):
                    names.append("nn.Module.compile")
            used |= {api for api in TORCH_SINCE for n in names if n == api or n.startswith(api)}
    return used


def _required(apis: set[str]) -> tuple[int, int]:
    return max((TORCH_SINCE[a] for a in apis), default=(2, 0))


def test_torch_floors_are_the_oldest_versions_with_the_apis_called() -> None:
    """The floors follow from the newer APIs the code calls: the core's from the core alone,
    the pretrain extra's (and dev's, which trains) from the pretraining code too."""
    import importlib
    from importlib.util import find_spec

    import torch

    for api in TORCH_SINCE:  # every entry names a real API (a typo would check nothing)
        owner, _, name = api.rpartition(".")
        if owner == "nn.Module":
            assert hasattr(torch.nn.Module, name), api
        else:
            assert hasattr(importlib.import_module(owner), name) or find_spec(api), api
    core = _torch_apis(_files(pretrain=False))
    pretrain = _torch_apis(_files(pretrain=True)) | core
    assert "nn.Module.compile" in core and "torch.distributed.fsdp.fully_shard" in pretrain
    project = _project()
    assert _floor(project["dependencies"], "torch") == _required(core), sorted(core)
    for extra in ("pretrain", "dev"):
        floor = _floor(project["optional-dependencies"][extra], "torch")
        assert floor == _required(pretrain), (extra, sorted(pretrain))


def test_python_floor_covers_every_module_and_syntax_the_repo_uses() -> None:
    """``requires-python`` is at least the release of every newer standard-library module that
    the package, tests, benchmarks and examples import, and ruff checks syntax at that floor."""
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    spec = data["project"]["requires-python"]
    assert spec.startswith(">=")
    floor = tuple(int(x) for x in spec[2:].split("."))
    files = [
        f for d in ("sdcorr", "tests", "benchmarks", "examples") for f in (REPO / d).rglob("*.py")
    ]
    needed = {m: v for m, v in STDLIB_SINCE.items() for f in files
              if re.search(rf"^\s*(import|from) {re.escape(m)}\b", f.read_text(), re.M)}  # fmt: skip
    assert "tomllib" in needed  # the tests read pyproject.toml with it
    assert all(floor >= v for v in needed.values()), (floor, needed)
    assert data["tool"]["ruff"]["target-version"] == f"py{floor[0]}{floor[1]}"
    assert sys.version_info[:2] >= floor
