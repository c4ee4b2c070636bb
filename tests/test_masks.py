"""Automatic foreground masks: synthetic features, the pipeline plumbing, real DINOv2-S on SPair."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sdcorr.config import get_preset
from sdcorr.image import Geometry
from sdcorr.masks import content_border, foreground_grid, foreground_mask, kmeans
from sdcorr.pipeline import SDDino
from sdcorr.types import FeatureMap


def _blob_features(w: int = 280, h: int = 210, seed: int = 0) -> tuple[FeatureMap, torch.Tensor]:
    """Features of a ``w x h`` image on a 224 frame: one direction for an interior block of
    cells, two others (left and right halves) for the background, plus noise."""
    geo = Geometry(w, h, 224, 14)
    g = torch.Generator().manual_seed(seed)
    dirs = torch.eye(16)
    feats = dirs[1].repeat(16, 16, 1)
    feats[:, 8:] = dirs[2]
    obj = torch.zeros(16, 16, dtype=torch.bool)
    obj[6:11, 4:12] = True
    feats[obj] = dirs[0]
    feats = feats + 0.05 * torch.randn(16, 16, 16, generator=g)
    return FeatureMap(feats.permute(2, 0, 1)[None], (geo,)), obj


def test_interior_object_is_found_whatever_its_direction() -> None:
    fm, obj = _blob_features()
    assert torch.equal(foreground_grid(fm), obj & fm.geometry[0].content_mask())
    # the same with the roles of the feature directions swapped: the border decides, not a sign
    swapped = FeatureMap(fm.features[:, [2, 0, 1, *range(3, 16)]], fm.geometry)
    assert torch.equal(foreground_grid(swapped), obj)


def test_pixel_mask_shape_and_padding() -> None:
    fm, obj = _blob_features()
    m = foreground_mask(fm)
    geo = fm.geometry[0]
    assert m.shape == (210, 280) and m.dtype == bool
    cells = geo.to_cell(torch.tensor([[140.0, 105.0], [2.0, 2.0]]))
    assert m[105, 140] == bool(obj[cells[0, 1], cells[0, 0]]) and not m[2, 2]
    ring = content_border(geo.content_mask())
    assert ring.sum() > 0 and not (ring & ~geo.content_mask()).any()  # padding rows excluded


def test_kmeans_is_deterministic_and_separates_clusters() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g) + 10])
    lab = kmeans(x, 2)
    assert torch.equal(lab, kmeans(x, 2))
    assert len(lab[:50].unique()) == 1 and len(lab[50:].unique()) == 1 and lab[0] != lab[-1]


class _Counting:
    """A stand-in DINO extractor that counts images and gives the blob features."""

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, images):
        self.images += len(images)
        maps = [_blob_features(*im.size)[0] for im in images]
        return FeatureMap(torch.cat([m.features for m in maps]), tuple(m.geometry[0] for m in maps))


def test_pipeline_mask_reuses_the_features_of_a_match() -> None:
    dino = _Counting()
    pipe = SDDino(get_preset("dino"), dino=dino, cache_size=4)
    img = np.zeros((210, 280, 3), np.uint8)
    pts = [[140.0, 105.0]]
    m = pipe.match_points(img, img, pts, mask_a="auto", mask_b="auto")
    assert dino.images == 1  # A and B are the same pixels: one extraction
    mask = pipe.foreground_mask(img)
    assert dino.images == 1 and mask.shape == (210, 280) and mask[105, 140]
    geo = _blob_features()[0].geometry[0]
    assert torch.equal(m.points_b, geo.cell_to_original(geo.to_cell(m.points_a)).float())
    flow = pipe.match_dense(img, img, mask_a="auto", mask_b="auto")
    assert dino.images == 1
    assert torch.equal(flow.valid, torch.as_tensor(foreground_grid(_blob_features()[0])))


# ---------------------------------------------------------------------------- real weights
SPAIR_IMAGES = 12


@pytest.fixture(scope="module")
def spair_masks(real_dino_pipe, spair_root) -> list[tuple[str, np.ndarray, list[int]]]:
    """(name, automatic mask, annotated bbox) of the 12 spair-mini images (the ``dino`` preset
    on real DINOv2-S; features shared with the other real-weights tests of the session)."""
    pipe = real_dino_pipe()
    out = []
    for path in sorted((spair_root / "JPEGImages").glob("*/*.jpg")):
        ann = spair_root / "ImageAnnotation" / path.parent.name / f"{path.stem}.json"
        box = json.loads(ann.read_text())["bndbox"]
        out.append((f"{path.parent.name}/{path.name}", pipe.foreground_mask(path), box))
    return out


@pytest.mark.realweights
@pytest.mark.slow
def test_real_dinov2_masks_lie_on_the_annotated_objects(spair_masks) -> None:
    inside, cover = [], []
    for _, mask, (x1, y1, x2, y2) in spair_masks:
        box = np.zeros_like(mask)
        box[y1:y2, x1:x2] = True
        inside.append((mask & box).sum() / max(mask.sum(), 1))
        cover.append((mask & box).sum() / box.sum())
    assert len(spair_masks) == SPAIR_IMAGES
    print(f"mask inside bbox {np.mean(inside):.3f}, bbox covered {np.mean(cover):.3f}")
    assert np.mean(inside) >= 0.8 and np.mean(cover) >= 0.3


def test_fill_holes_fills_enclosed_background_only() -> None:
    from sdcorr.masks import fill_holes

    m = torch.zeros(7, 9, dtype=torch.bool)
    m[1:6, 1:6] = True
    m[3, 3] = False  # a hole
    m[0:3, 7] = True  # a bar touching the border: the space beside it is not a hole
    m[2, 8] = False
    out = fill_holes(m)
    assert out[3, 3] and out.sum() == m.sum() + 1
