"""sdcorr: zero-shot semantic correspondence from fused Stable Diffusion and DINOv2 features.

Importing sdcorr changes no global state and downloads nothing; models load in
``from_pretrained``.
"""

from __future__ import annotations

from .config import PRESETS, PipelineConfig, get_preset
from .errors import SdcorrError
from .image import Geometry, load_image
from .pipeline import ImageFeatures, SDDino
from .types import FeatureMap, Matches

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "FeatureMap",
    "Geometry",
    "ImageFeatures",
    "Matches",
    "PipelineConfig",
    "SDDino",
    "SdcorrError",
    "__version__",
    "get_preset",
    "load_image",
]
