"""The import graph of ``sdcorr/``: no cycle, and no import that climbs or crosses the layers.

Layers, lowest first: the core (features, fusion, match, pipeline, viz, cache, image, config, ...)
< ``eval`` | ``pretrain`` | ``demo`` (siblings: each uses only the core) < the entry points
(``cli``, ``commands/``). Every
import counts, deferred ones inside functions included. A package's ``__init__`` is not a node
of the graph (importing ``sdcorr.x`` reaches the names it re-exports, not a cycle), but importing
a package still counts as importing its layer.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SIBLINGS = ("eval", "pretrain", "demo")
ENTRY = ("cli", "commands")


def modules(root: Path) -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the ``sdcorr`` package under ``root``."""
    pkg = root / "sdcorr"
    return {".".join(p.relative_to(root).with_suffix("").parts): p for p in pkg.rglob("*.py")}


def layer(name: str) -> tuple[int, str]:
    """``(rank, name)`` of a module's layer: 0 core, 1 eval/pretrain/demo, 2 entry points."""
    parts = name.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top in ENTRY:
        return 2, "entry"
    if top in SIBLINGS:
        return 1, top
    return 0, "core"


def _imported(node: ast.AST, package: list[str]) -> Iterator[str]:
    """Dotted names an import statement reaches (``from p import x``: ``p.x`` and ``p``)."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            up = package[: len(package) - node.level + 1]
            base = ".".join(up + ([base] if base else []))
        yield base
        yield from (f"{base}.{a.name}" for a in node.names)


def _target(name: str, mods: dict[str, Path]) -> str | None:
    """The module (or package, as ``pkg.__init__``) a dotted name lands on inside sdcorr."""
    parts = name.split(".")
    while parts:
        dotted = ".".join(parts)
        if dotted in mods:
            return dotted
        if f"{dotted}.__init__" in mods:
            return f"{dotted}.__init__"
        parts.pop()
    return None


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: modules and packages it imports}`` (every import statement, at any depth)."""
    mods = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        here = name.split(".")
        package = here[:-1]  # a module's package; an __init__'s is its own folder
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            hits = {_target(d, mods) for d in _imported(node, package) if d.startswith("sdcorr")}
            hits.discard(None)
            hits.discard(name)
            for pkg in [h for h in hits if h.endswith(".__init__")]:
                inside = pkg.removesuffix("__init__")  # `from pkg import sub` uses sub, not pkg
                if any(h != pkg and h.startswith(inside) for h in hits):
                    hits.discard(pkg)
            targets |= hits
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (``__init__`` files left out)."""
    nodes = {m: {t for t in ts if not t.endswith("__init__")} for m, ts in graph.items()
             if not m.endswith("__init__")}  # fmt: skip
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(nodes[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(nodes) + 100))
    try:
        for v in sorted(nodes):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def layer_breaks(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b (x imports y)"`` for every import of a layer above, or of a sibling layer."""
    out = []
    for a, targets in sorted(graph.items()):
        rank_a, name_a = layer(a)
        for b in sorted(targets):
            rank_b, name_b = layer(b.removesuffix(".__init__"))
            if rank_b > rank_a or (rank_a == rank_b == 1 and name_a != name_b):
                out.append(f"{a} -> {b} ({name_a} imports {name_b})")
    return out


# ---------------------------------------------------------------------------- the rule
def test_sdcorr_has_no_import_cycle() -> None:
    assert cycles(import_graph(REPO)) == []


def test_no_module_imports_a_layer_above_or_beside_it() -> None:
    assert layer_breaks(import_graph(REPO)) == []


# ---------------------------------------------------------------------------- the checker
def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in {"sdcorr/__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_a_cycle_through_deferred_imports(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "sdcorr/commands/__init__.py": "",
        "sdcorr/commands/batch.py": "def run():\n    from .match import _STEPS\n",
        "sdcorr/commands/match.py": "def run():\n    from . import batch\n",
        "sdcorr/commands/extract.py": "from .match import run\n",
    })  # fmt: skip
    graph = import_graph(root)
    assert graph["sdcorr.commands.batch"] == {"sdcorr.commands.match"}
    assert cycles(graph) == [["sdcorr.commands.batch", "sdcorr.commands.match"]]
    assert layer_breaks(graph) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"sdcorr/demo/session.py": "from ..eval.cache import FeatureCache\n"},
            "sdcorr.demo.session -> sdcorr.eval.cache (demo imports eval)",
        ),
        (
            {"sdcorr/pretrain/cli.py": "def main():\n    from ..cli import run_guarded\n"},
            "sdcorr.pretrain.cli -> sdcorr.cli (pretrain imports entry)",
        ),
        (
            {"sdcorr/pipeline.py": "def f():\n    import sdcorr.eval\n"},
            "sdcorr.pipeline -> sdcorr.eval.__init__ (core imports eval)",
        ),
        (
            {"sdcorr/viz.py": "from sdcorr.demo import render\n"},
            "sdcorr.viz -> sdcorr.demo.render (core imports demo)",
        ),
        ({"sdcorr/commands/match.py": "from ..demo import render\n"}, None),
        (
            {"sdcorr/pretrain/__main__.py": "from ..commands.pretrain import main\n"},
            "sdcorr.pretrain.__main__ -> sdcorr.commands.pretrain (pretrain imports entry)",
        ),
    ],
)
def test_checker_finds_imports_that_climb_or_cross(tmp_path, files, expected) -> None:
    base = {f"sdcorr/{p}/__init__.py": "" for p in ("eval", "demo", "pretrain", "commands")}
    stubs = {"sdcorr/eval/cache.py": "", "sdcorr/cli.py": "", "sdcorr/demo/render.py": "",
             "sdcorr/commands/pretrain.py": ""}  # fmt: skip
    graph = import_graph(_package(tmp_path, {**base, **stubs, **files}))
    assert layer_breaks(graph) == ([expected] if expected else [])
