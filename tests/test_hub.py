"""Model resolution: local folders, aliases, the offline error, presets."""

from __future__ import annotations

import pytest

from sdcorr import hub
from sdcorr.config import get_preset
from sdcorr.errors import ConfigError, ModelNotFoundError


def test_local_folders_resolve(tiny_models) -> None:
    assert hub.resolve_model(str(tiny_models["dino"]), "dino") == tiny_models["dino"]
    assert hub.resolve_model(str(tiny_models["sd"]), "sd") == tiny_models["sd"]


def test_wrong_kind_of_folder(tiny_models) -> None:
    with pytest.raises(ModelNotFoundError, match="not a diffusers SD pipeline"):
        hub.resolve_model(str(tiny_models["dino"]), "sd")


def test_missing_folder(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="model folder not found"):
        hub.resolve_model(str(tmp_path / "nope"), "dino")


def test_offline_cache_miss_names_id_cache_and_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "cache_dir", lambda: tmp_path)
    with pytest.raises(ModelNotFoundError) as err:
        hub.resolve_model("dinov2-base", "dino")
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("facebook/dinov2-base", str(tmp_path), "sdcorr download", "--dino-model"):
        assert part in msg


def test_aliases_and_preset_models() -> None:
    assert hub.canonical_id("sd-1.5") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert hub.canonical_id("dinov2-reg-large") == "facebook/dinov2-with-registers-large"
    assert hub.preset_models("sd-dino") == {
        "sd": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "dino": "facebook/dinov2-base",
    }
    assert set(hub.preset_models("dino")) == {"dino"}


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'.*sd-dino"):
        get_preset("nope")


def _http_error(cls, status: int, message: str = "request failed"):
    import importlib

    from huggingface_hub.errors import Response  # the HTTP library's class huggingface_hub uses

    http = importlib.import_module(Response.__module__.split(".")[0])
    response = Response(status, request=http.Request("GET", "https://huggingface.co/org/model"))
    return cls(message, response=response)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda e: _http_error(e.GatedRepoError, 403, "Could not resolve"), "gated"),
        (lambda e: _http_error(e.RepositoryNotFoundError, 404, "connect"), "no such model"),
        (lambda e: _http_error(e.RevisionNotFoundError, 404), "no such revision"),
        (lambda e: _http_error(e.HfHubHTTPError, 401), "access denied"),
        (lambda e: _http_error(e.HfHubHTTPError, 500), "HTTP 500"),
        (lambda e: e.OfflineModeIsEnabled("offline"), "cannot be reached"),
        (lambda e: e.LocalEntryNotFoundError("no snapshot"), "cannot be reached"),
    ],
)
def test_download_failures_are_told_apart_by_error_type(make, reason, tmp_path,
                                                        monkeypatch) -> None:  # fmt: skip
    """The reason comes from huggingface_hub's error classes, not from their message text
    (the messages above would mislead a text match)."""
    from huggingface_hub import errors

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "is_offline", lambda: False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(hub, "cache_dir", lambda: tmp_path)

    def snapshot(repo, kind, revision, local_only):
        raise errors.LocalEntryNotFoundError("not cached") if local_only else make(errors)

    monkeypatch.setattr(hub, "_snapshot", snapshot)
    with pytest.raises(ModelNotFoundError, match=reason) as err:
        hub.resolve_model("org/model", "dino")
    assert "\n" not in str(err.value)
    assert "sdcorr download --no-preset --model org/model" in str(err.value)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda e: _http_error(e.GatedRepoError, 403, "Could not resolve"), "gated"),
        (lambda e: _http_error(e.HfHubHTTPError, 500), "HTTP 500"),
        (lambda e: e.LocalEntryNotFoundError("no file"), "cannot be reached"),
    ],
)
def test_unet_weight_files_climb_the_same_ladder(make, reason, tmp_path, monkeypatch) -> None:
    """``repo:file`` U-Net weights: cache, then Hub, failures classified by the same code as
    model folders (a second classification would drift)."""
    import huggingface_hub
    from huggingface_hub import errors

    from sdcorr.features.unet_weights import resolve_weights

    monkeypatch.setattr(hub, "is_offline", lambda: False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(hub, "cache_dir", lambda: tmp_path)
    asked: list[bool] = []

    def download(repo, filename, local_files_only=False):
        asked.append(local_files_only)
        raise errors.LocalEntryNotFoundError("not cached") if local_files_only else make(errors)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(ModelNotFoundError, match=reason) as err:
        resolve_weights("org/unet:w.safetensors")
    assert asked == [True, False] and "\n" not in str(err.value)
    assert "--unet-weights PATH" in str(err.value) and str(tmp_path) in str(err.value)
    monkeypatch.setattr(hub, "is_offline", lambda: True)
    asked.clear()
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE is set"):
        resolve_weights("org/unet:w.safetensors")
    assert asked == [True]  # offline: the cache only
    with pytest.raises(ModelNotFoundError, match="U-Net weights file not found"):
        resolve_weights(str(tmp_path / "missing.safetensors"))
