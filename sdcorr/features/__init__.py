"""Feature extractors: DINOv2 (:class:`ViTExtractor`), Stable Diffusion (:class:`SDFeatureExtractor`).

Both are imported lazily so that ``import sdcorr`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dino import ViTExtractor
    from .sd import SDFeatureExtractor

__all__ = ["SDFeatureExtractor", "ViTExtractor"]


def __getattr__(name: str) -> Any:
    if name == "ViTExtractor":
        from .dino import ViTExtractor

        return ViTExtractor
    if name == "SDFeatureExtractor":
        from .sd import SDFeatureExtractor

        return SDFeatureExtractor
    raise AttributeError(name)
