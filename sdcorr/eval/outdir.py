"""The output folder of an evaluation: created, or checked against the run that wrote it.

A folder records its run's settings in ``config.json``; a later run with the same folder resumes
only if its settings are the same (paths compared normalised), otherwise it stops, naming each
setting that differs, before any model loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..io import make_output_dir

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"


def check_out_dir(out_dir: str | Path, config: dict[str, Any]) -> Path:
    """Create ``out_dir`` or check that its previous run used the same ``config``.

    Raises:
        OutputError: the folder cannot be created (one line: a read-only folder, ``/proc``) or
            holds results of a different configuration.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path is not a folder: {out}")
    make_output_dir(out, "--out")
    cfg_file = out / CONFIG_FILE
    if cfg_file.is_file():
        try:
            old = json.loads(cfg_file.read_text())
        except json.JSONDecodeError:
            raise OutputError(f"unreadable {cfg_file}; remove it or use another --out") from None
        diff = config_diff(old, json.loads(json.dumps(config)))
        if diff:
            raise OutputError(
                f"{out} holds results of another configuration ({cfg_file}): {diff}; "
                "use another --out, or rerun with the earlier settings to resume"
            )
    return out


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
