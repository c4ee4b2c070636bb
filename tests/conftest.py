"""Shared fixtures: tiny random-weight models, the SPair fixture, the real DINOv2-S weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The real SPair-71k subset ships with the tests (a copy of ../shared/data/spair-mini, 1.3 MB), so a
# fresh clone runs every SPair test; SDCORR_SPAIR_MINI points the tests at another copy.
SPAIR_MINI = Path(
    os.environ.get("SDCORR_SPAIR_MINI", REPO / "tests" / "data" / "spair-mini" / "SPair-71k")
)
# Real DINOv2 ViT-S/14 weights (see its README): not in the repository (85 MB); the ``realweights``
# tests skip cleanly without them. SDCORR_DINOV2_SMALL points at another folder.
DINOV2_SMALL = Path(
    os.environ.get(
        "SDCORR_DINOV2_SMALL", REPO.parent / "shared" / "models" / "dinov2-small-imgfocus"
    )
)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"dino": folder, "sd": folder}`` of tiny random-weight models (built once)."""
    from sdcorr.testing import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def spair_root() -> Path:
    """The real SPair-71k subset in the official layout (``tests/data/spair-mini``, 6 pairs)."""
    if not (SPAIR_MINI / "PairAnnotation").is_dir():
        pytest.skip(f"SPair fixture not found at {SPAIR_MINI}")
    return SPAIR_MINI


@pytest.fixture(scope="session")
def dinov2_small() -> Path:
    """Folder of the real DINOv2 ViT-S/14 weights (``../shared/models/dinov2-small-imgfocus``).

    Tests that use it are marked ``realweights``; they skip when the folder is absent.
    """
    if not (DINOV2_SMALL / "model.safetensors").is_file():
        pytest.skip(f"real DINOv2-S weights not found at {DINOV2_SMALL}")
    return DINOV2_SMALL


@pytest.fixture(scope="session")
def real_dino(dinov2_small: Path):
    """The ``dino`` preset's extractor (block 11, 840 frame) on the real DINOv2-S weights,
    shared by every test of the session (:class:`sdcorr.testing.SharedExtractor`)."""
    from dataclasses import replace

    from sdcorr.config import get_preset
    from sdcorr.features.dino import ViTExtractor
    from sdcorr.testing import SharedExtractor

    cfg = replace(get_preset("dino").dino, model=str(dinov2_small))
    return SharedExtractor(ViTExtractor.from_config(cfg, device="cpu"))


@pytest.fixture(scope="session")
def real_dino_pipe(real_dino, dinov2_small: Path):
    """``make(config=None)``: an ``SDDino`` of ``config`` (default: the ``dino`` preset) on
    the shared real DINOv2-S extractor, as ``SDDino.from_pretrained`` would build it."""
    from dataclasses import replace

    from sdcorr.config import get_preset
    from sdcorr.pipeline import SDDino

    def make(config=None) -> SDDino:
        cfg = config or get_preset("dino")
        dino = replace(cfg.dino, model=str(dinov2_small), frame=real_dino.frame)
        return SDDino(replace(cfg, dino=dino), dino=real_dino, cache_size=32)

    return make


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the network: the hub is told to stay offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _threads_kept():
    """A test that changes torch's thread count must put it back: one left at 1 once ran every
    later test single-threaded (the real-weights fixtures twice as slow)."""
    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    torch.set_num_threads(before)
    assert after == before, f"torch threads changed from {before} to {after} and not restored"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cuda`` tests without a GPU and ``weights`` tests unless SDCORR_WEIGHTS=1."""
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    skip_weights = pytest.mark.skip(reason="needs real weights (set SDCORR_WEIGHTS=1)")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)
        if "weights" in item.keywords and os.environ.get("SDCORR_WEIGHTS") != "1":
            item.add_marker(skip_weights)


# Tests that a CI run must not skip: under CI=true their skip is a failure that says why.
MUST_RUN_IN_CI = ("realweights", "browser")


def in_ci() -> bool:
    """Whether this is a CI run (``CI=true``, as CI services and ``.ci/run`` set it)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under CI=true, a skipped ``realweights`` or ``browser`` test fails, naming the test and
    the reason it could not run (the weights folder, Chromium or Playwright that is missing)."""
    outcome = yield
    report = outcome.get_result()
    marks = [m for m in MUST_RUN_IN_CI if m in item.keywords]
    if report.skipped and marks and in_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        reason = str(reason).removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"CI=true: {item.nodeid} ({marks[0]}) could not run: {reason}"
