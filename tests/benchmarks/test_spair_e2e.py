"""End to end on the SPair fixture with the tiny random-weight models of ``sdcorr.testing``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_spair_script import run_spair, spair_main

pytestmark = pytest.mark.slow
FRAMES = ["--sd-frame", "128", "--sd-tile", "128", "--dino-frame", "112", "--device", "cpu"]


def _args(root: Path, models: dict, out: Path, *extra: str) -> list[str]:
    return ["--root", str(root), "--out", str(out), "--sd-model", str(models["sd"]),
            "--dino-model", str(models["dino"]), *FRAMES, *extra, "-q"]  # fmt: skip


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module", autouse=True)
def _load_once() -> Iterator[None]:
    """In this process, load the tiny models once for all runs (loading is not under test); each
    run still gets a pipeline with its own feature cache."""
    from sdcorr.pipeline import SDDino

    load = SDDino.from_pretrained.__func__
    memo: dict = {}

    def cached(cls, *args, **kwargs):
        cache = {k: kwargs.pop(k) for k in ("cache_size", "cache_dir") if k in kwargs}
        key = repr((args, sorted(kwargs.items())))
        if key not in memo:
            memo[key] = load(cls, *args, **kwargs)
        models = memo[key]  # each run gets its own feature cache, as a fresh load would
        return cls(models.config, models.sd, models.dino, **cache)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SDDino, "from_pretrained", classmethod(cached))
        yield


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="module")
def single(spair_root, tiny_models, cache_dir, tmp_path_factory) -> Path:
    """One full single-process run (in this process), filling an on-disk feature cache."""
    out = tmp_path_factory.mktemp("single")
    assert spair_main(_args(spair_root, tiny_models, out, "--cache-dir", str(cache_dir))) == 0
    return out


def test_writes_pairs_and_summary(single: Path) -> None:
    lines = [json.loads(s) for s in (single / "pairs.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and lines[0]["pair"].startswith("000167-")
    assert len(lines[0]["pred_kps"]) == len(lines[0]["true_kps"]) == 7
    summary = _json(single / "summary.json")
    cfg = summary["config"]
    assert cfg["pipeline"]["sd"]["frame"] == 128 and cfg["pipeline"]["sd"]["tile_size"] == 128
    assert cfg["pipeline"]["dino"]["frame"] == 112 and cfg["eval"]["threshold"] == "bbox"
    assert cfg["pipeline"]["sd"]["model"].endswith("sd") and cfg["prompt"] == "empty"
    assert cfg["dtype"] == "fp32" and _json(single / "timing.json")["dtype"] == "fp32"
    assert all(json.loads(s)["dtype"] == "fp32" for s in (single / "pairs.jsonl").open())
    assert summary["pck"]["0.1"]["n_keypoints"] == 43 and summary["pck"]["0.1"]["n_pairs"] == 6
    assert set(summary["by_protocol"]) == {"bbox-lt", "bbox-le", "img-lt", "img-le"}
    assert summary["by_protocol"]["bbox-lt"] == summary["pck"]  # a default run's own protocol
    timing = _json(single / "timing.json")["rank0"]
    assert timing["pairs"] == 6 and timing["extracted"] == 12


def test_rerun_resumes_without_recomputing(single, spair_root, tiny_models, tmp_path) -> None:
    out = tmp_path / "resume"
    shutil.copytree(single, out)
    assert spair_main(_args(spair_root, tiny_models, out)) == 0
    assert _json(out / "timing.json")["rank0"] | {"seconds": 0} == {
        "pairs": 0, "seconds": 0, "pairs_per_s": None,
        "extracted": 0, "mirrors_extracted": 0, "memory_hits": 0, "disk_hits": 0,
    }  # fmt: skip
    lines = (out / "pairs.jsonl").read_text().splitlines(keepends=True)
    (out / "pairs.jsonl").write_text("".join(lines[:4]) + lines[4][:30])  # killed mid-pair 5
    (out / "summary.json").unlink()
    assert spair_main(_args(spair_root, tiny_models, out)) == 0
    timing = _json(out / "timing.json")["rank0"]
    assert timing["pairs"] == 2 and timing["extracted"] == 4  # pairs 5 and 6, 4 new images
    assert _json(out / "summary.json") == _json(single / "summary.json")
    assert (out / "pairs.jsonl").read_text() == (single / "pairs.jsonl").read_text()


def test_disk_cache_gives_the_same_results(single, spair_root, tiny_models, cache_dir, tmp_path):
    assert len(list(cache_dir.rglob("*.safetensors"))) == 12  # written by the first run
    out = tmp_path / "from-disk"
    assert spair_main(_args(spair_root, tiny_models, out, "--cache-dir", str(cache_dir))) == 0
    assert _json(out / "summary.json") == _json(single / "summary.json")
    assert (out / "pairs.jsonl").read_text() == (single / "pairs.jsonl").read_text()
    timing = _json(out / "timing.json")["rank0"]
    assert timing["extracted"] == 0 and timing["disk_hits"] == 12


def test_two_processes_equal_one(single, spair_root, tiny_models, tmp_path) -> None:
    out = tmp_path / "two"
    run_spair(_args(spair_root, tiny_models, out)[:-1], nproc=2)
    assert _json(out / "summary.json") == _json(single / "summary.json")
    assert (out / "pairs.jsonl").read_text() == (single / "pairs.jsonl").read_text()
    assert _json(out / "timing.json")["rank0"]["pairs"] == 3
