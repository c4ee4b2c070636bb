"""The bundled example script runs end to end (with tiny models)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_api_example_runs_with_tiny_models(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "api_example.py",
            "--tiny",
            str(tmp_path / "m"),
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ],
    )
    runpy.run_path(str(EXAMPLES / "api_example.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("-> B") == 3
    assert Image.open(tmp_path / "api_swap.png").size == (512, 600)
    assert (tmp_path / "api_matches.png").stat().st_size > 0


def test_example_images_are_bundled() -> None:
    a = Image.open(EXAMPLES / "images" / "astronaut.jpg")
    b = Image.open(EXAMPLES / "images" / "grace_hopper.jpg")
    assert a.size == (512, 512) and b.size == (512, 600)
