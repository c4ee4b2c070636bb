"""The annotated image pair every dataset reader yields, and the names around it.

One record for all five benchmarks (SPair-71k, PF-Pascal, PF-Willow, AP-10K, TSS), so the
runner, the PCK code, resume, sharding and ``--predictions`` never ask which dataset a pair
came from. Points are ``(x, y)`` in the images' original pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Natural-language names for the SD prompt "a photo of a {name}" (the files use joined words).
NATURAL_NAMES: dict[str, str] = {
    "pottedplant": "potted plant",
    "tvmonitor": "tv monitor",
    "diningtable": "dining table",
    "motorbike": "motorbike",
    "winebottle": "wine bottle",
}


# The SD prompt a preset is evaluated with unless ``--prompt`` says otherwise: CleanDIFT's
# GeoAware-SC evaluation always captions "A photo of a {category}" with the raw dataset name
# (its ``extractor_sd.py``; the preset's template supplies the wording).
PRESET_PROMPTS: dict[str, str] = {"cleandift": "category-raw"}
PROMPT_STYLES: tuple[str, ...] = ("empty", "category", "category-raw")


def default_prompt(preset: str) -> str:
    """The prompt style a preset is evaluated with by default (``"empty"`` for most)."""
    return PRESET_PROMPTS.get(preset, "empty")


def natural_name(category: str) -> str:
    """``"pottedplant" → "potted plant"``; other names unchanged (the SD prompt's wording)."""
    return NATURAL_NAMES.get(category, category)


@dataclass(frozen=True)
class Pair:
    """One annotated image pair.

    Attributes:
        name: the pair's id, e.g. ``"000167-2008_007604-2009_001056:aeroplane"`` (SPair: the
            pair file stem; see each reader); a repeated draw is ``name#k``.
        category: the category the tables group by.
        src_image: path of the source image.
        trg_image: path of the target image.
        src_kps: ``(K, 2)`` float64 ``(x, y)`` source keypoints, original pixels.
        trg_kps: ``(K, 2)`` float64 ``(x, y)`` target keypoints (row ``i`` ↔ ``src_kps[i]``).
        kps_ids: ``K`` semantic keypoint ids (strings, as in the files; ``()`` for TSS).
        src_size: ``(W, H)`` of the source image.
        trg_size: ``(W, H)`` of the target image.
        src_bbox: ``(x1, y1, x2, y2)`` of the source object.
        trg_bbox: ``(x1, y1, x2, y2)`` of the target object.
        prompt_name: the object's natural name for the SD prompt "a photo of a {name}"
            (``None``: no name, the prompt stays empty).
        label: the object's name exactly as the dataset spells it (``"pottedplant"``), for
            captions that use raw names (CleanDIFT's "A photo of a {category}").
        src_pose: the source's pose label where the dataset has one (SPair: ``Left``,
            ``Right``, ``Frontal``, ``Rear``, ``Unspecified``), else ``None``.
        trg_pose: the target's pose label, likewise.
    """

    name: str
    category: str
    src_image: Path
    trg_image: Path
    src_kps: np.ndarray
    trg_kps: np.ndarray
    kps_ids: tuple[str, ...]
    src_size: tuple[int, int]
    trg_size: tuple[int, int]
    src_bbox: tuple[float, float, float, float]
    trg_bbox: tuple[float, float, float, float]
    prompt_name: str | None = None
    label: str | None = None
    src_pose: str | None = None
    trg_pose: str | None = None

    @property
    def num_kps(self) -> int:
        """Number of keypoints scored for this pair."""
        return len(self.src_kps)


def base_name(name: str) -> str:
    """A pair name without the ``#k`` suffix of a repeated draw."""
    return name.split("#", 1)[0]


def renamed(pair: Pair, name: str) -> Pair:
    """``pair`` under another name (a repeated draw ``name#k``); itself if the name is equal."""
    return pair if pair.name == name else dataclasses.replace(pair, name=name)


def with_prompt_names(pairs: list[Pair], style: str) -> list[Pair]:
    """Pairs whose ``prompt_name`` is what the SD prompt template receives.

    Args:
        pairs: pairs as the readers give them (natural names).
        style: ``"category"`` keeps the natural names ("potted plant"), ``"category-raw"``
            uses the dataset's own spelling (``label``: "pottedplant", as CleanDIFT's
            caption), ``"empty"`` removes them (the prompt stays empty).
    """
    if style == "category":
        return list(pairs)
    if style == "category-raw":
        return [dataclasses.replace(p, prompt_name=p.label) for p in pairs]
    if style == "empty":
        return [dataclasses.replace(p, prompt_name=None) for p in pairs]
    raise ValueError(f"unknown prompt style {style!r}")
