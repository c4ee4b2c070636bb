"""The output folder of a resumable run: created, or checked against the run that wrote it.

A folder records its run's settings in ``config.json``; a later run with the same folder resumes
only if its settings are the same (paths compared normalised), otherwise it stops, naming each
setting that differs, before any model loads. The evaluation (``--out``) and batch matching
(``sdcorr match --pairs --out-dir``) both use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import OutputError
from .io import make_output_dir

CONFIG_FILE = "config.json"


def check_out_dir(out_dir: str | Path, config: dict[str, Any], option: str = "--out") -> Path:
    """Create ``out_dir`` or check that its previous run used the same ``config``.

    Raises:
        OutputError: the folder cannot be created or written (one line naming ``option``), or it
            holds results of a different configuration.
    """
    out = Path(out_dir)
    check_previous(out, config, option)
    make_output_dir(out, option)
    return out


def check_previous(out: Path, config: dict[str, Any], option: str = "--out") -> bool:
    """Whether ``out`` holds an earlier run (its ``config.json``); creates nothing.

    Raises:
        OutputError: that run's ``config.json`` is unreadable or differs from ``config`` (the
            line names each setting that differs, and ``option``).
    """
    cfg_file = out / CONFIG_FILE
    if not cfg_file.is_file():
        return False
    try:
        old = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise OutputError(f"unreadable {cfg_file}; remove it or use another {option}") from None
    diff = config_diff(old, json.loads(json.dumps(config)))
    if diff:
        raise OutputError(
            f"{out} holds results of another configuration ({cfg_file}): {diff}; "
            f"use another {option}, or rerun with the earlier settings to resume"
        )
    return True


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    return {prefix: obj}


def _same(key: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if key.endswith("root") and isinstance(a, str) and isinstance(b, str):
        return normalise_path(a) == normalise_path(b)  # spelling: "data/x/" == "./data/x"
    return False


def normalise_path(path: str | Path) -> str:
    """The absolute, normalised spelling of a path (``~`` expanded, no trailing ``/``)."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(path))))


def config_diff(old: dict[str, Any], new: dict[str, Any], most: int = 6) -> str:
    """``"key: old (previous run) != new (this run); ..."`` for the settings that differ."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in a.keys() | b.keys() if not _same(k, a.get(k, "<unset>"),
                                                               b.get(k, "<unset>")))  # fmt: skip
    parts = [f"{k}: {a.get(k, '<unset>')!r} (previous run) != {b.get(k, '<unset>')!r} (this run)"
             for k in keys[:most]]  # fmt: skip
    if len(keys) > most:
        parts.append(f"and {len(keys) - most} more")
    return "; ".join(parts)
