"""The per-image feature cache: an LRU in memory and an optional folder of safetensors files.

Raw per-image features (before the per-pair PCA) depend only on the image, on whether it is
mirrored (flip alignment), on its category (the SD prompt) and on the extraction settings, so an
image that appears in many pairs is extracted once per process, and its mirror once. Images are
keyed by content: the sha1 of a file's bytes, or of the decoded pixels of an in-memory image
(PIL, array, tensor), so the same picture under two names, or a mirror given as an image and the
mirror made for flip alignment, share one entry. On disk a file is named
``<sha1>-<category>-<config hash>[-mirror].safetensors`` (the config hash covers model ids,
frames, timestep, layers and dtype), so one folder can be shared between runs and never serves
features of another image, prompt or configuration. ``stats`` counts what really happened:
images extracted, mirrors extracted, entries served from memory, entries served from disk;
``seconds`` is the wall time spent extracting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .config import PipelineConfig, to_dict
from .flip import mirror_image
from .image import Geometry, ImageLike, load_image
from .io import atomic_path
from .types import FeatureMap

log = logging.getLogger("sdcorr")


@dataclass(frozen=True)
class ImageFeatures:
    """Raw features of one image, before the per-pair PCA (what the cache stores).

    Attributes:
        maps: ``{"s3"|"s4"|"s5"|"dino": FeatureMap (1, C, h, w)}`` for the enabled branches.
    """

    maps: dict[str, FeatureMap]

    def to(self, *args: Any, **kwargs: Any) -> ImageFeatures:
        """Move/cast every map like :meth:`torch.Tensor.to`."""
        return ImageFeatures({k: v.to(*args, **kwargs) for k, v in self.maps.items()})

    @property
    def nbytes(self) -> int:
        """Bytes held by the feature tensors."""
        return sum(m.features.numel() * m.features.element_size() for m in self.maps.values())

    def sd(self) -> dict[str, FeatureMap] | None:
        """The SD layer maps, or ``None`` without the SD branch."""
        sd = {k: v for k, v in self.maps.items() if k != "dino"}
        return sd or None


def config_hash(extraction: dict[str, Any]) -> str:
    """A short stable hash of a JSON-ready extraction config."""
    blob = json.dumps(extraction, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def extraction_key(config: PipelineConfig, dtype: torch.dtype | str | None) -> str:
    """The config hash of what decides raw features: the SD and DINO settings and the dtype."""
    sd = to_dict(config.sd) if config.sd is not None else None
    dino = to_dict(config.dino) if config.dino is not None else None
    return config_hash({"sd": sd, "dino": dino, "dtype": str(dtype)})


def content_key(image: ImageLike, mirrored: bool = False) -> tuple[str, bool]:
    """``(sha1, mirrored)`` naming an image's content: a file by the sha1 of its bytes and the
    mirror flag; an in-memory image by the sha1 of the pixels that are extracted (its mirror's
    when ``mirrored``, the flag then ``False``), so a mirror given as an image and the mirror
    made from its original share one key."""
    if isinstance(image, str | Path):
        try:
            data = Path(image).read_bytes()
        except OSError:
            load_image(image)  # raises the typed one-line error (missing, a folder, ...)
            raise
        return hashlib.sha1(data).hexdigest(), mirrored
    pil = mirror_image(image) if mirrored else load_image(image)
    h = hashlib.sha1(f"{pil.size}{pil.mode}".encode())
    h.update(pil.tobytes())
    return h.hexdigest(), False


#: ``extract(image, category) -> ImageFeatures`` of one image (path, PIL image, array, tensor),
#: and ``extract(image, category, mirrored=True)`` for the features of its horizontal mirror.
Extract = Callable[..., ImageFeatures]
Key = tuple[str, bool, str | None]  # (content sha1, mirrored file, category)


class FeatureCache:
    """Extract-once store of per-image raw features.

    Args:
        extract: ``extract(image, category) -> ImageFeatures`` for one image, as given, and
            ``extract(image, category, mirrored=True)`` for its mirror.
        size: images kept in memory (least recently used ones are dropped; 0: none).
        disk: folder of safetensors files (``None``: memory only).
        config_key: hash of the extraction config (:func:`extraction_key`), part of disk names.
        device: device that features read from disk are moved to.
    """

    def __init__(
        self,
        extract: Extract,
        size: int = 32,
        disk: str | Path | None = None,
        config_key: str = "",
        device: torch.device | str = "cpu",
    ) -> None:
        """See the class docstring."""
        self._extract = extract
        self.size = size
        self.disk = Path(disk) if disk is not None else None
        if self.disk is not None:
            self.disk.mkdir(parents=True, exist_ok=True)
        self.config_key = config_key
        self.device = device
        self._mem: OrderedDict[Key, ImageFeatures] = OrderedDict()
        self.stats = {"extracted": 0, "mirrors_extracted": 0, "memory_hits": 0, "disk_hits": 0}
        self.seconds = 0.0  # wall time spent in ``extract``

    def get(
        self, image: ImageLike, category: str | None = None, mirrored: bool = False
    ) -> ImageFeatures:
        """The features of ``image`` (of its mirror when ``mirrored``), extracting at most once."""
        return self.get_many([image], category, mirrored)[0]

    def get_many(
        self, images: Sequence[ImageLike], category: str | None = None, mirrored: bool = False
    ) -> list[ImageFeatures]:
        """The features of each image; the misses are extracted one image per call (so results
        never depend on which images happen to share a batch), each distinct image once."""
        found: dict[Key, ImageFeatures] = {}
        keys = []
        for image in images:
            key = (*content_key(image, mirrored), category)
            if key not in found:
                found[key] = self._lookup(key) or self._fill(key, image, mirrored)
            keys.append(key)
        return [found[k] for k in keys]

    def count_extracted(self, n: int, mirrored: bool = False) -> None:
        """Record ``n`` images (or mirrors) extracted outside the cache (a caller that bypasses
        it)."""
        self.stats["mirrors_extracted" if mirrored else "extracted"] += n

    # ------------------------------------------------------------------ memory and disk
    def _lookup(self, key: Key) -> ImageFeatures | None:
        if key in self._mem:
            self._mem.move_to_end(key)
            self.stats["memory_hits"] += 1
            return self._mem[key]
        feats = self._load(key)
        if feats is not None:
            self._remember(key, feats)
        return feats

    def _fill(self, key: Key, image: ImageLike, mirrored: bool) -> ImageFeatures:
        mirror = {"mirrored": True} if mirrored else {}  # plain extractors take two arguments
        start = time.perf_counter()
        feats = self._extract(image, key[2], **mirror)
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)  # time the work, not its launch
        self.seconds += time.perf_counter() - start
        self.stats["mirrors_extracted" if mirrored else "extracted"] += 1
        self._save(key, feats)
        self._remember(key, feats)
        return feats

    def _remember(self, key: Key, feats: ImageFeatures) -> None:
        if self.size <= 0:
            return
        self._mem[key] = feats
        while len(self._mem) > self.size:
            self._mem.popitem(last=False)

    def disk_path(self, key: Key) -> Path:
        """The safetensors file of a key in the disk cache."""
        assert self.disk is not None
        digest, mirrored, category = key
        suffix = "-mirror" if mirrored else ""
        name = f"{digest}-{category or '_'}-{self.config_key}{suffix}.safetensors"
        return self.disk / digest[:2] / name

    def _load(self, key: Key) -> ImageFeatures | None:
        if self.disk is None or not (file := self.disk_path(key)).is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                maps = {
                    name: FeatureMap(
                        f.get_tensor(name).to(self.device),
                        tuple(Geometry(**g) for g in json.loads(meta[name])),
                    )
                    for name in f.keys()  # noqa: SIM118 (safe_open has no __iter__)
                }
        except Exception as err:  # a damaged cache file is recomputed, not fatal
            log.warning("ignoring unreadable cache file %s (%s)", file, err)
            return None
        self.stats["disk_hits"] += 1
        return ImageFeatures(maps)

    def _save(self, key: Key, feats: ImageFeatures) -> None:
        if self.disk is None:
            return
        from safetensors.torch import save_file

        file = self.disk_path(key)
        file.parent.mkdir(exist_ok=True)
        tensors = {k: m.features.detach().cpu().contiguous() for k, m in feats.maps.items()}
        meta = {k: json.dumps([asdict(g) for g in m.geometry]) for k, m in feats.maps.items()}
        with atomic_path(file) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
