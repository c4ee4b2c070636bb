"""Checks of a local DINO model folder or U-Net weights file before any model is built from it.

A folder given with ``--dino-model`` (or ``--init``) must hold a readable ``config.json`` of a
ViT that :class:`sdcorr.features.dino.ViTExtractor` can hook, and weights; a
``model.safetensors`` must be complete. A ``--unet-weights`` file must be a complete safetensors
file or a ``torch.save`` zip whose pickle refers to nothing but tensors and plain containers
(:func:`check_weights_file`). Each problem is one line naming the folder or file and what is
wrong (:class:`~sdcorr.errors.ModelLoadError`); nothing here loads a model or unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelLoadError, first_line

# transformers ``model_type`` values of the ViTs the DINO extractor hooks
DINO_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "dinov3_vit")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
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
        problem = _safetensors_problem(tensors)
        if problem:
            raise ModelLoadError(f"model folder {path}: model.safetensors is damaged ({problem})")
    return path


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file, or ``None`` when it is."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass  # reads and checks the header against the file size; loads no tensor
    except Exception as err:  # SafetensorError (truncated, corrupt header), OSError
        return first_line(err)
    return None


def is_torch_zip(path: Path) -> bool:
    """Whether ``path`` starts like a ``torch.save`` zip archive."""
    with path.open("rb") as f:
        return f.read(4) == ZIP_MAGIC


def check_weights_file(path: Path, option: str = "--unet-weights") -> Path:
    """Raise :class:`ModelLoadError` unless ``path`` is a readable safetensors file with a
    complete header, or a ``torch.save`` zip whose pickle (scanned, not run) refers to nothing
    but tensors and plain containers; return ``path``."""
    if not path.is_file():
        raise ModelLoadError(f"{option} {path}: not a file")
    try:
        torch_zip = is_torch_zip(path)
    except OSError as err:
        raise ModelLoadError(f"{option} {path}: cannot read it ({err.strerror})") from None
    if not torch_zip:
        problem = _safetensors_problem(path)
        if problem:
            raise ModelLoadError(
                f"{option} {path}: neither a safetensors file nor a torch.save state dict"
                f" ({problem})"
            )
        return path
    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        unsafe = get_unsafe_globals_in_checkpoint(path)
    except Exception as err:  # a damaged zip, a TorchScript archive
        raise ModelLoadError(
            f"{option} {path}: not a readable torch.save file ({first_line(err)})"
        ) from None
    if unsafe:
        raise ModelLoadError(
            f"{option} {path}: refused: it refers to Python objects"
            f" ({', '.join(sorted(unsafe)[:3])}) that a state dict never holds and that could"
            " run code when loaded; nothing of it was loaded"
        )
    return path
