"""The core feature cache: LRU in memory, safetensors on disk keyed by content + config, mirrors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdcorr.cache import FeatureCache, ImageFeatures, config_hash, content_key
from sdcorr.flip import mirror_image
from sdcorr.image import Geometry, load_image
from sdcorr.types import FeatureMap


class FakePipe:
    """Records ``(file name, category)`` of every extraction; features from the image size."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def extract_one(self, image: Path, category: str | None) -> ImageFeatures:
        self.calls.append((Path(image).name, category))
        w, h = Image.open(image).size
        feats = torch.arange(4.0).reshape(1, 1, 2, 2) + w
        return ImageFeatures({"dino": FeatureMap(feats, (Geometry(w, h, 28, 14),))})


def _cache(pipe: FakePipe, **kw) -> FeatureCache:
    return FeatureCache(pipe.extract_one, **kw)


def test_memory_lru(spair_root: Path) -> None:
    a, b = sorted((spair_root / "JPEGImages" / "cow").glob("*.jpg"))
    pipe = FakePipe()
    cache = _cache(pipe, size=1)
    assert cache.get(a, "cow") is cache.get(a, "cow")
    cache.get(a, None)  # another prompt is another entry
    cache.get(b, "cow")
    cache.get(a, "cow")  # evicted by the size-1 LRU
    assert pipe.calls == [(a.name, "cow"), (a.name, None), (b.name, "cow"), (a.name, "cow")]
    assert cache.stats == {"extracted": 4, "mirrors_extracted": 0, "memory_hits": 1,
                           "disk_hits": 0}  # fmt: skip


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


class _Recorder:
    """An extractor recording what it was asked for; its features are the image's mean colour
    (a mirror has the same mean, so only the record tells a mirror from its original)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, bool]] = []

    def __call__(self, image, category, mirrored=False):
        pil = load_image(image)
        self.asked.append((type(image).__name__, mirrored))
        feats = torch.tensor(np.asarray(pil), dtype=torch.float32).mean((0, 1)).view(1, 3, 1, 1)
        return ImageFeatures({"dino": FeatureMap(feats, (Geometry(*pil.size, 14, 14),))})


def test_mirrors_are_extracted_once_and_counted_apart(tmp_path, spair_root) -> None:
    path = next((spair_root / "JPEGImages" / "dog").glob("*.jpg"))
    rec = _Recorder()
    cache = FeatureCache(rec, size=8, disk=tmp_path / "c")
    plain = cache.get(path)
    mirror = cache.get(path, mirrored=True)
    assert cache.get(path, mirrored=True) is mirror and plain is not mirror
    assert rec.asked == [("PosixPath", False), ("PosixPath", True)]
    assert cache.stats == {"extracted": 1, "mirrors_extracted": 1, "memory_hits": 1,
                           "disk_hits": 0}  # fmt: skip
    assert sorted(p.name.endswith("-mirror.safetensors")
                  for p in (tmp_path / "c").rglob("*.safetensors")) == [False, True]  # fmt: skip
    # an in-memory image is keyed by the pixels extracted: the mirror made from A and a mirror
    # given as an image are one entry
    pil = Image.open(path).convert("RGB")
    assert content_key(pil, mirrored=True) == content_key(mirror_image(pil))
    assert content_key(pil) != content_key(mirror_image(pil))
    assert content_key(path, mirrored=True) == (content_key(path)[0], True)
    fresh = FeatureCache(rec, size=8)
    made = fresh.get(pil, mirrored=True)
    assert fresh.get(mirror_image(pil)) is made and fresh.stats["mirrors_extracted"] == 1
    assert fresh.stats["extracted"] == 0


def test_a_missing_file_is_a_one_line_image_error(tmp_path) -> None:
    from sdcorr.errors import ImageLoadError

    with pytest.raises(ImageLoadError, match="not found"):
        FeatureCache(_Recorder()).get(tmp_path / "nope.jpg")
