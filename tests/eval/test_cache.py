"""The per-image feature cache: LRU in memory, safetensors on disk keyed by content + config."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from sdcorr.eval.cache import FeatureCache, config_hash

from .fakes import FakeFeatures, FakePipe


def _cache(pipe: FakePipe, **kw) -> FeatureCache:
    extract = lambda path, cat: pipe.extract([path], category=cat)[0]  # noqa: E731
    return FeatureCache(extract, factory=FakeFeatures, **kw)


def test_memory_lru(spair_root: Path) -> None:
    a, b = sorted((spair_root / "JPEGImages" / "cow").glob("*.jpg"))
    pipe = FakePipe()
    cache = _cache(pipe, size=1)
    assert cache.get(a, "cow") is cache.get(a, "cow")
    cache.get(a, None)  # another prompt is another entry
    cache.get(b, "cow")
    cache.get(a, "cow")  # evicted by the size-1 LRU
    assert pipe.calls == [(a.name, "cow"), (a.name, None), (b.name, "cow"), (a.name, "cow")]
    assert cache.stats == {"extracted": 4, "memory_hits": 1, "disk_hits": 0}


def test_disk_round_trip_keyed_by_content_category_and_config(spair_root, tmp_path) -> None:
    img = tmp_path / "x.jpg"
    shutil.copy(next((spair_root / "JPEGImages" / "dog").glob("*.jpg")), img)
    key = config_hash({"sd": {"frame": 256}})
    first = _cache(FakePipe(), disk=tmp_path / "c", config_key=key).get(img, "dog")
    pipe = FakePipe()
    again = _cache(pipe, disk=tmp_path / "c", config_key=key)
    got = again.get(img, "dog")
    assert pipe.calls == [] and again.stats["disk_hits"] == 1
    for name, fmap in first.maps.items():
        assert torch.equal(got.maps[name].features, fmap.features)
        assert got.maps[name].geometry == fmap.geometry
    again.get(img, "cat")  # other prompt
    _cache(pipe, disk=tmp_path / "c", config_key=config_hash({"sd": {"frame": 512}})).get(
        img, "dog"
    )  # other config
    moved = tmp_path / "renamed.jpg"
    shutil.copy(img, moved)  # same bytes under another name: served from disk
    _cache(pipe, disk=tmp_path / "c", config_key=key).get(moved, "dog")
    assert [c for _, c in pipe.calls] == ["cat", "dog"]
    assert len(list((tmp_path / "c").rglob("*.safetensors"))) == 3
