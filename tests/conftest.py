"""Shared fixtures: tiny random-weight models written once per session, the SPair fixture."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SPAIR_MINI = Path(
    os.environ.get(
        "SDCORR_SPAIR_MINI", REPO.parent / "shared" / "data" / "spair-mini" / "SPair-71k"
    )
)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"dino": folder, "sd": folder}`` of tiny random-weight models (built once)."""
    from sdcorr.testing import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def spair_root() -> Path:
    """The real SPair-71k subset in the official layout (``../shared/data/spair-mini``)."""
    if not (SPAIR_MINI / "PairAnnotation").is_dir():
        pytest.skip(f"SPair fixture not found at {SPAIR_MINI}")
    return SPAIR_MINI


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the network: the hub is told to stay offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cuda`` tests without a GPU and ``weights`` tests unless SDCORR_WEIGHTS=1."""
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    skip_weights = pytest.mark.skip(reason="needs real weights (set SDCORR_WEIGHTS=1)")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)
        if "weights" in item.keywords and os.environ.get("SDCORR_WEIGHTS") != "1":
            item.add_marker(skip_weights)
