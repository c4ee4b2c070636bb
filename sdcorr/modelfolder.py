"""Checks of a local DINO model folder before any model is built from it.

A folder given with ``--dino-model`` (or ``--init``) must hold a readable ``config.json`` of a
ViT that :class:`sdcorr.features.dino.ViTExtractor` can hook, and weights; a
``model.safetensors`` must be complete. Each problem is one line naming the folder and what
is wrong (:class:`~sdcorr.errors.ModelLoadError`); nothing here loads a model or unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelLoadError, first_line

# transformers ``model_type`` values of the ViTs the DINO extractor hooks
DINO_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "dinov3_vit")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def read_config(path: Path) -> dict:
    """The parsed ``config.json`` of model folder ``path``."""
    config = path / "config.json"
    try:
        data = json.loads(config.read_text())
    except OSError as err:
        raise ModelLoadError(
            f"model folder {path}: cannot read config.json ({err.strerror})"
        ) from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ModelLoadError(
            f"model folder {path}: config.json is not valid JSON ({err})"
        ) from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"model folder {path}: config.json does not hold a JSON object")
    return data


def check_dino_folder(path: Path) -> Path:
    """Raise :class:`ModelLoadError` unless ``path`` looks loadable as a DINO ViT; return it.

    Checked: ``config.json`` parses and names a DINOv2/DINOv3 ``model_type``; a weights file
    exists; ``model.safetensors``, if present, has a complete header and data (not truncated).
    """
    model_type = read_config(path).get("model_type")
    if model_type not in DINO_MODEL_TYPES:
        raise ModelLoadError(
            f"model folder {path}: config.json says model_type '{model_type}', which is not a "
            f"DINOv2 or DINOv3 ViT ({', '.join(DINO_MODEL_TYPES)})"
        )
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelLoadError(
            f"model folder {path} has no weights (model.safetensors or pytorch_model.bin)"
        )
    tensors = path / "model.safetensors"
    if tensors.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(tensors), framework="pt"):
                pass  # reads and checks the header against the file size; loads no tensor
        except Exception as err:  # SafetensorError (truncated, corrupt header), OSError
            raise ModelLoadError(
                f"model folder {path}: model.safetensors is damaged ({first_line(err)})"
            ) from None
    return path
