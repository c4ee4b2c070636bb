"""README's first two commands, .ci/run and the LICENSE agree with each other and with pyproject."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands of the README's first ``bash`` block (the two commands at its top)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def ci_commands() -> list[str]:
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    return [ln for ln in lines if ln.strip() and not ln.lstrip().startswith(("#", "set ", "cd "))]


def test_readme_opens_with_two_commands_the_second_installing_what_the_tests_need() -> None:
    first, second = readme_commands()
    assert first.startswith("pip install -e . && sdcorr match ") and "--out swap.gif" in first
    install, _, test = second.partition(" && ")
    assert shlex.split(install) == ["pip", "install", "-e", ".[dev]"]
    assert shlex.split(test) == ["python", "-m", "pytest", "-q"]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    second = readme_commands()[1]
    ci = ci_commands()
    assert ci[-1] == second  # the last thing CI runs is the README's command, verbatim
    installs = [c for c in ci[:-1] if c.startswith("pip install")]
    assert installs == ["pip install torch==2.13.0"]  # the CPU build CI's package index serves


def test_readme_says_how_to_get_a_cpu_torch_and_the_weights_licences() -> None:
    text = " ".join((REPO / "README.md").read_text().split())
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in text
    assert "CUDA build" in text
    assert "CreativeML OpenRAIL-M" in text and "Apache-2.0" in text


def test_license_file_is_the_mit_licence_pyproject_declares() -> None:
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["license"] == {"text": "MIT"}
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
