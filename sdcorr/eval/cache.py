"""Per-image feature cache: an LRU in memory and an optional folder of safetensors files.

Raw per-image features (before the per-pair PCA) depend only on the image, its category (the SD
prompt) and the extraction settings, so an SPair image that appears in many pairs is extracted
once. On disk, the key is ``sha1(image bytes) + category + sha1(extraction config)``, so a cache
folder can be shared between runs and never serves features of another config or image.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..image import Geometry
from ..io import atomic_path
from ..types import FeatureMap

log = logging.getLogger("sdcorr")


def _default_factory(maps: dict[str, FeatureMap]) -> Any:
    from ..pipeline import ImageFeatures

    return ImageFeatures(maps=maps)


def config_hash(extraction: dict[str, Any]) -> str:
    """A short stable hash of a JSON-ready extraction config."""
    blob = json.dumps(extraction, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


class FeatureCache:
    """Extract-once store of per-image features.

    Args:
        extract: ``extract(path, category) -> features`` for one image (an ``ImageFeatures``).
        size: images kept in memory (least recently used ones are dropped; 0 disables).
        disk: folder of safetensors files (``None``: memory only).
        config_key: hash of the extraction config (see :func:`config_hash`), part of disk keys.
        factory: ``factory(maps) -> features`` rebuilding an object from its maps when loading
            from disk (default: ``sdcorr.pipeline.ImageFeatures(maps=maps)``).
        device: device loaded features are moved to.
    """

    def __init__(
        self,
        extract: Callable[[Path, str | None], Any],
        size: int = 32,
        disk: str | Path | None = None,
        config_key: str = "",
        factory: Callable[[dict[str, FeatureMap]], Any] | None = None,
        device: Any = "cpu",
    ) -> None:
        """See the class docstring."""
        self._extract = extract
        self.size = size
        self.disk = Path(disk) if disk is not None else None
        if self.disk is not None:
            self.disk.mkdir(parents=True, exist_ok=True)
        self.config_key = config_key
        self._factory = factory or _default_factory
        self._device = device
        self._mem: OrderedDict[tuple[str, str | None], Any] = OrderedDict()
        self.stats = {"extracted": 0, "memory_hits": 0, "disk_hits": 0}

    def sibling(self, extract: Callable[[Path, str | None], Any], suffix: str) -> FeatureCache:
        """A cache with the same size, folder and device for another extractor of the same images
        (e.g. their mirrors); ``suffix`` is appended to the config key so disk entries differ."""
        return FeatureCache(
            extract, size=self.size, disk=self.disk, config_key=f"{self.config_key}{suffix}",
            factory=self._factory, device=self._device,
        )  # fmt: skip

    def get(self, path: Path, category: str | None = None) -> Any:
        """The features of image ``path`` (with its category prompt), extracting at most once."""
        key = (str(path), category)
        if key in self._mem:
            self._mem.move_to_end(key)
            self.stats["memory_hits"] += 1
            return self._mem[key]
        feats = self._load(path, category)
        if feats is None:
            feats = self._extract(path, category)
            self.stats["extracted"] += 1
            self._save(path, category, feats)
        if self.size > 0:
            self._mem[key] = feats
            while len(self._mem) > self.size:
                self._mem.popitem(last=False)
        return feats

    def disk_path(self, path: Path, category: str | None) -> Path:
        """The safetensors file of an image in the disk cache."""
        assert self.disk is not None
        digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()
        name = f"{digest}-{category or '_'}-{self.config_key}.safetensors"
        return self.disk / digest[:2] / name

    def _load(self, path: Path, category: str | None) -> Any:
        if self.disk is None:
            return None
        file = self.disk_path(path, category)
        if not file.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                maps = {
                    name: FeatureMap(
                        f.get_tensor(name).to(self._device),
                        tuple(Geometry(**g) for g in json.loads(meta[name])),
                    )
                    for name in f.keys()  # noqa: SIM118 (safe_open has no __iter__)
                }
        except Exception as err:  # a damaged cache file is recomputed, not fatal
            log.warning("ignoring unreadable cache file %s (%s)", file, err)
            return None
        self.stats["disk_hits"] += 1
        return self._factory(maps)

    def _save(self, path: Path, category: str | None, feats: Any) -> None:
        if self.disk is None:
            return
        from safetensors.torch import save_file

        file = self.disk_path(path, category)
        file.parent.mkdir(exist_ok=True)
        tensors = {k: m.features.detach().cpu().contiguous() for k, m in feats.maps.items()}
        meta = {k: json.dumps([asdict(g) for g in m.geometry]) for k, m in feats.maps.items()}
        with atomic_path(file) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
