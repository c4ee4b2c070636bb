"""Model ids, local/offline resolution and downloads.

A model is named by a hub id (``facebook/dinov2-base``), a short alias (``dinov2-base``,
``sd-1.5``) or a local folder. :func:`resolve_model` returns a local folder: the folder itself,
the Hugging Face cache snapshot, or a fresh download. It never downloads at import time and
honours ``HF_HUB_OFFLINE=1``. When nothing works it raises one :class:`ModelNotFoundError` that
names the model, the cache it looked in and the fix. Every download ladder (model folders here,
U-Net weight files in :mod:`sdcorr.features.unet_weights`) goes local path → cache → Hub through
:func:`ladder`, which classifies the failures in one place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from .config import get_preset
from .errors import ModelNotFoundError
from .modelfolder import check_dino_folder

log = logging.getLogger("sdcorr")

Kind = Literal["sd", "dino"]

ALIASES: dict[str, str] = {
    "sd-1.5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd-2.1": "stabilityai/stable-diffusion-2-1-base",
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    **{f"dinov2-{s}": f"facebook/dinov2-{s}" for s in ("small", "base", "large", "giant")},
    **{
        f"dinov2-reg-{s}": f"facebook/dinov2-with-registers-{s}"
        for s in ("small", "base", "large", "giant")
    },
    # DINOv3 ViTs (patch 16, gated on the Hub: accept the licence, then `hf auth login`)
    **{
        f"dinov3-{size}": f"facebook/dinov3-{arch}-pretrain-lvd1689m"
        for size, arch in (
            ("small", "vits16"),
            ("small-plus", "vits16plus"),
            ("base", "vitb16"),
            ("large", "vitl16"),
            ("huge-plus", "vith16plus"),
            ("7b", "vit7b16"),
        )
    },
    "dinov3-large-sat": "facebook/dinov3-vitl16-pretrain-sat493m",
}

# Only the files the extractors read: no safety checker, no .ckpt, no VAE-decoder-only files.
ALLOW_PATTERNS: dict[str, list[str]] = {
    "sd": [
        "model_index.json",
        "scheduler/*.json",
        "tokenizer/*",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ],
    "dino": ["config.json", "model.safetensors", "preprocessor_config.json"],
}

# A file that must exist in a local folder of each kind.
MARKER = {"sd": "unet/config.json", "dino": "config.json"}
FLAG = {"sd": "--sd-model", "dino": "--dino-model"}


def canonical_id(name: str) -> str:
    """Expand a short alias to its hub id (other names are returned unchanged)."""
    return ALIASES.get(name, name)


def cache_dir() -> Path:
    """The Hugging Face hub cache folder in use (``HF_HUB_CACHE`` / ``HF_HOME``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read at call time as well as at hub import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return env or bool(constants.HF_HUB_OFFLINE)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") != 1


def _check_folder(path: Path, kind: Kind) -> Path:
    if not path.is_dir():
        raise ModelNotFoundError(f"model path is not a folder: {path}")
    if not (path / MARKER[kind]).exists():
        raise ModelNotFoundError(
            f"folder {path} is not a {'diffusers SD pipeline' if kind == 'sd' else 'DINOv2 model'}"
            f" (no {MARKER[kind]})"
        )
    return check_dino_folder(path) if kind == "dino" else path


def resolve_model(name: str, kind: Kind, revision: str | None = None) -> Path:
    """Return a local folder holding model ``name``.

    Args:
        name: local folder, hub id or alias.
        kind: ``"sd"`` (diffusers pipeline folder) or ``"dino"`` (transformers model folder).
        revision: hub revision to pin (ignored for local folders).

    Raises:
        ModelNotFoundError: a missing local folder, or a hub model that is not cached and
            cannot be downloaded (offline, or no network).
    """
    repo = canonical_id(name)

    def local() -> Path | None:
        path = Path(name).expanduser()
        if path.exists():
            return _check_folder(path, kind)
        if repo == name and _looks_like_path(name):
            raise ModelNotFoundError(f"model folder not found: {path}")
        return None  # a hub id or alias

    def get(local_only: bool) -> Path:
        return _snapshot(repo, kind, revision, local_only)

    return ladder(local, get, lambda reason: _not_found(repo, kind, reason), what=repo)


def ladder(
    local: Callable[[], Path | None],
    get: Callable[[bool], Path],
    not_found: Callable[[str], ModelNotFoundError],
    what: str,
) -> Path:
    """The one download ladder: a local path, else the Hugging Face cache, else the Hub.

    Args:
        local: the local path the name gives (``None``: the name is a hub name); raises its own
            one-line error for a path that cannot be one.
        get: ``get(local_only)``: the thing's local path (snapshot folder, file) from the cache
            only (``True``) or from the Hub (``False``).
        not_found: builds the one-line error from a reason ("HF_HUB_OFFLINE is set", "the
            Hugging Face Hub cannot be reached", ...; told apart by huggingface_hub's error types).
        what: named in the "downloading" log line.
    """
    found = local()
    if found is not None:
        return found
    try:
        return get(True)
    except Exception as err:
        cached_err = err
    if is_offline():
        raise not_found("HF_HUB_OFFLINE is set") from cached_err
    log.info("downloading %s into %s", what, cache_dir())
    try:
        return get(False)
    except Exception as err:
        raise not_found(_reason(err)) from err


def _snapshot(repo: str, kind: Kind, revision: str | None, local_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    folder = snapshot_download(
        repo,
        revision=revision,
        allow_patterns=ALLOW_PATTERNS[kind],
        local_files_only=local_only,
    )
    return _check_folder(Path(folder), kind)


def _reason(err: Exception) -> str:
    """Why a download failed, from the type of huggingface_hub's error (never its wording)."""
    from huggingface_hub import errors

    if isinstance(err, errors.GatedRepoError):  # before RepositoryNotFoundError, its base class
        return "access to it is gated (accept its licence on the Hub, then `hf auth login`)"
    if isinstance(err, errors.RepositoryNotFoundError):
        return "no such model on the Hub (or it is private: log in with `hf auth login`)"
    if isinstance(err, errors.RevisionNotFoundError):
        return "the Hub has no such revision of it"
    if isinstance(err, errors.HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            return "access denied (log in with `hf auth login`)"
        return f"the Hub answered with HTTP {status}" if status else "the Hub request failed"
    if isinstance(err, (errors.LocalEntryNotFoundError, ConnectionError, TimeoutError)):
        # snapshot_download raises LocalEntryNotFoundError when the Hub cannot be reached
        return "the Hugging Face Hub cannot be reached"
    return f"download failed: {type(err).__name__}"


def _not_found(repo: str, kind: Kind, reason: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model '{repo}' is not in the Hugging Face cache ({cache_dir()}) and {reason}; "
        f"fetch it once with `sdcorr download --model {repo}` where the Hub is reachable, "
        f"or pass a local folder with {FLAG[kind]} PATH"
    )


def preset_models(preset: str) -> dict[Kind, str]:
    """The ``{kind: hub id}`` models that preset ``preset`` loads."""
    cfg = get_preset(preset)
    out: dict[Kind, str] = {}
    if cfg.sd is not None:
        out["sd"] = cfg.sd.model
    if cfg.dino is not None:
        out["dino"] = cfg.dino.model
    return out


def download(
    preset: str | None = "sd-dino",
    models: dict[Kind, str] | None = None,
    revision: str | None = None,
) -> dict[Kind, Path]:
    """Fetch the models of ``preset`` (and/or explicit ``models``) into the HF cache.

    Returns:
        ``{kind: local folder}`` for each model.
    """
    todo: dict[Kind, str] = dict(preset_models(preset)) if preset else {}
    todo.update(models or {})
    return {kind: resolve_model(name, kind, revision) for kind, name in todo.items()}
