"""Model ids, local/offline resolution and downloads.

A model is named by a hub id (``facebook/dinov2-base``), a short alias (``dinov2-base``,
``sd-1.5``) or a local folder. :func:`resolve_model` returns a local folder: the folder itself,
the Hugging Face cache snapshot, or a fresh download. It never downloads at import time and
honours ``HF_HUB_OFFLINE=1``. Everything a run reads from outside (model folders, U-Net weight
files) is a :class:`Needed` and goes local path → cache → Hub through :func:`fetch_all`, the one
ladder: it asks the Hub only when it is reachable (one quick request, no retries), classifies the
failures in one place, and raises one :class:`ModelNotFoundError` naming every missing thing,
where it looked, and the one command that fetches them all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import PRESETS, PipelineConfig, get_preset
from .errors import ModelNotFoundError, SdcorrError
from .modelfolder import check_dino_folder, check_weights_file

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


@dataclass(frozen=True)
class Needed:
    """One thing a run reads from a local path, the Hugging Face cache or the Hub.

    Attributes:
        label: what it is, for messages (``DINO model 'facebook/dinov2-base'``).
        repo: the hub repo it comes from (its cache folder is where a miss looked).
        local: the local path its name gives (``None``: a hub name); raises its own one-line
            error for a path that cannot be one.
        get: ``get(local_only)``: its local path from the cache only (``True``) or from the
            Hub (``False``).
        fetch: the ``sdcorr download`` arguments that fetch it (``--model facebook/dinov2-base``).
        instead: how to pass a local copy instead (``a local folder with --dino-model PATH``).
    """

    label: str
    repo: str
    local: Callable[[], Path | None]
    get: Callable[[bool], Path]
    fetch: str
    instead: str


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


def model_needed(name: str, kind: Kind, revision: str | None = None) -> Needed:
    """What a run needs to find model ``name`` (local folder, hub id or alias) of ``kind``."""
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

    what = "Stable Diffusion" if kind == "sd" else "DINO"
    return Needed(f"{what} model '{repo}'", repo, local, get, f"--model {repo}",
                  f"a local folder with {FLAG[kind]} PATH")  # fmt: skip


def weights_needed(spec: str) -> Needed:
    """What a run needs to find U-Net weights ``spec``: a local file or a hub ``repo:file``."""
    repo, _, filename = spec.partition(":")

    def local() -> Path | None:
        path = Path(spec).expanduser()
        if path.exists():
            return check_weights_file(path)
        if ":" not in spec:
            raise ModelNotFoundError(f"U-Net weights file not found: {spec}")
        return None  # a hub repo:filename

    def get(local_only: bool) -> Path:
        from huggingface_hub import hf_hub_download

        return check_weights_file(
            Path(hf_hub_download(repo, filename, local_files_only=local_only))
        )

    return Needed(f"U-Net weights file '{spec}'", repo, local, get, f"--unet-weights {spec}",
                  "a local file with --unet-weights PATH")  # fmt: skip


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
    return fetch_all([model_needed(name, kind, revision)])[0]


def needed_for(config: PipelineConfig, revision: str | None = None) -> dict[str, Needed]:
    """Everything ``config`` loads from outside: ``{"dino"|"sd"|"unet_weights": Needed}`` for
    its DINO model, SD pipeline and U-Net weights file, in that order."""
    needed: dict[str, Needed] = {}
    if config.dino is not None:
        needed["dino"] = model_needed(config.dino.model, "dino", revision)
    if config.sd is not None:
        needed["sd"] = model_needed(config.sd.model, "sd", revision)
        if config.sd.unet_weights:
            needed["unet_weights"] = weights_needed(config.sd.unet_weights)
    return needed


def fetch_all(needed: Sequence[Needed], preset: str | None = None) -> list[Path]:
    """The one download ladder: each thing's local path, else the Hugging Face cache, else the
    Hub; every miss is reported at once.

    The Hub is tried only when ``HF_HUB_OFFLINE`` is unset and one quick request reaches it
    (:func:`hub_unavailable`), so an unreachable Hub costs no retries and no misleading
    "downloading" line.

    Args:
        needed: what to find (:func:`model_needed`, :func:`weights_needed`, :func:`needed_for`).
        preset: the preset these belong to: when the misses are exactly what it fetches, the
            error's fix is ``sdcorr download --preset PRESET``.

    Returns:
        the local path of each, in order.

    Raises:
        ModelNotFoundError: one line naming every thing that is neither local, nor cached, nor
            downloadable, where it looked, why, and the one command that fetches them all.
    """
    found = [n.local() for n in needed]
    misses = []
    for i, n in enumerate(needed):
        if found[i] is None:
            try:
                found[i] = n.get(True)
            except Exception:  # not cached (or an incomplete snapshot): the Hub may complete it
                misses.append(i)
    why: dict[int, str] = {}
    offline = hub_unavailable() if misses else None
    for i in misses:
        if offline:
            why[i] = offline
            continue
        log.info("downloading %s into %s", needed[i].label, cache_dir())
        try:
            found[i] = needed[i].get(False)
        except SdcorrError:  # a downloaded folder that is not what it should be
            raise
        except Exception as err:
            why[i] = _reason(err)
    if why:
        raise missing_error([(needed[i], why[i]) for i in sorted(why)], preset)
    return [path for path in found if path is not None]


def hub_unavailable() -> str | None:
    """Why the Hub cannot be asked now (``HF_HUB_OFFLINE``, or one quick request to
    ``HF_ENDPOINT`` finds no server), or ``None`` when it can."""
    from huggingface_hub import constants

    if is_offline():
        return "HF_HUB_OFFLINE is set"
    if not hub_reachable():
        return f"the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached"
    return None


def hub_reachable() -> bool:
    """Whether one request to the Hub's endpoint gets an HTTP answer other than a server error
    (5xx), with no retries (huggingface_hub retries a file lookup five times with back-off)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        answer = get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception:  # connection refused, DNS failure, timeout, not an HTTP server
        return False
    return answer.status_code < 500


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


def missing_error(missing: Sequence[tuple[Needed, str]], preset: str | None) -> ModelNotFoundError:
    """One line naming each missing thing, where it looked and why, and the one command that
    fetches them all (``sdcorr download --preset P`` when they are what preset ``P`` fetches,
    else ``sdcorr download --no-preset`` with each of them)."""
    cache = cache_dir()
    reasons = {why for _, why in missing}
    same = reasons.pop() if len(reasons) == 1 else None
    looked = [
        f"{n.label} (looked in {cache / _repo_folder(n.repo)}{'' if same else '; ' + why})"
        for n, why in missing
    ]
    own = {n.fetch for n in needed_for(get_preset(preset)).values()} if preset in PRESETS else set()
    if {n.fetch for n, _ in missing} == own:  # exactly what the preset fetches
        command = f"sdcorr download --preset {preset}"
    else:
        command = " ".join(["sdcorr download --no-preset", *(n.fetch for n, _ in missing)])
    fixes = _and([n.instead for n, _ in missing])
    if len(missing) == 1:
        head = f"{looked[0]} is not in the Hugging Face cache"
        return ModelNotFoundError(
            f"{head}{' and ' + same if same else ''}; fetch it once with `{command}` where the"
            f" Hub is reachable, or pass {fixes}"
        )
    head = f"{len(missing)} models are not in the Hugging Face cache"
    return ModelNotFoundError(
        f"{head}{' and ' + same if same else ''}: {_and(looked)}; fetch them all once with"
        f" `{command}` where the Hub is reachable, or pass {fixes}"
    )


def _repo_folder(repo: str) -> str:
    """The cache folder of hub model ``repo`` (huggingface_hub's layout)."""
    return "models--" + repo.replace("/", "--")


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


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
    models: Sequence[tuple[Kind, str]] = (),
    unet_weights: str | None = None,
    revision: str | None = None,
) -> dict[str, Path]:
    """Fetch the models of ``preset`` (its U-Net weights file too, e.g. ``cleandift``'s), the
    extra ``(kind, name)`` ``models`` and ``unet_weights`` into the HF cache; a failure names
    every thing that could not be fetched at once.

    Returns:
        ``{"dino"|"sd"|"unet_weights"|"<kind>:<name>": local path}`` for each.
    """
    named = list(needed_for(get_preset(preset), revision).items()) if preset else []
    named += [(f"{kind}:{name}", model_needed(name, kind, revision)) for kind, name in models]
    if unet_weights:
        named.append(("unet_weights", weights_needed(unet_weights)))
    paths = fetch_all([n for _, n in named], preset)
    return {key: path for (key, _), path in zip(named, paths, strict=True)}
