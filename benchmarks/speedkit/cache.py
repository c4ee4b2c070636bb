"""The per-image feature cache of the SPair runner (``sdcorr.eval.cache.FeatureCache``).

Until that module is on this branch's base, a stand-in with the same ``get(path, category)``
interface (an in-memory LRU) is used, and the report says which one ran.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any


class _LRUCache:
    """In-memory stand-in for ``FeatureCache`` (same constructor head and ``get``)."""

    def __init__(self, extract: Callable[[Path, str | None], Any], size: int = 32) -> None:
        self._extract, self.size = extract, size
        self._mem: OrderedDict[tuple[str, str | None], Any] = OrderedDict()
        self.stats = {"extracted": 0, "memory_hits": 0, "disk_hits": 0}

    def get(self, path: Path, category: str | None = None) -> Any:
        """The features of ``path`` with ``category``, extracting at most once."""
        key = (str(path), category)
        if key in self._mem:
            self._mem.move_to_end(key)
            self.stats["memory_hits"] += 1
            return self._mem[key]
        feats = self._extract(path, category)
        self.stats["extracted"] += 1
        self._mem[key] = feats
        while len(self._mem) > self.size:
            self._mem.popitem(last=False)
        return feats


def feature_cache() -> tuple[Callable[..., Any], str]:
    """``(cache class, its name)``: the SPair runner's cache when available."""
    try:
        from sdcorr.eval.cache import FeatureCache
    except ImportError:
        return _LRUCache, "benchmarks stand-in LRU (sdcorr.eval.cache not on this branch yet)"
    return FeatureCache, "sdcorr.eval.cache.FeatureCache"
