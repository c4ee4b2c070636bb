"""TSS prediction on a pair of unequal sizes: the reference's padding rule, computed apart.

sd-dino (``utils/utils_tss.py``, ``pad_to_same_shape``) pads both images with zeros on the
right and bottom to their common size before extracting features; ``pck_tss.py`` then takes
the nearest source cell of every target cell and resizes the displacement to the padded frame.
The reference here pads with numpy, extracts each padded array with the same pipeline, and runs
the rewrite of ``nearest_neighbor_flow`` in ``test_datasets.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdcorr.eval.protocol import load_pairs
from sdcorr.eval.runner import ModelPredictor
from sdcorr.eval.tss import FlowPredictor

from .test_datasets import _reference_nn_flow

TSS = Path(__file__).resolve().parents[1] / "data" / "tss-mini" / "TSS_CVPR2016"


@pytest.fixture(scope="module")
def pipe(tiny_models):
    from sdcorr.config import get_preset
    from sdcorr.pipeline import SDDino

    cfg = get_preset("dino")
    cfg = dataclasses.replace(cfg, dino=dataclasses.replace(cfg.dino, frame=112))
    return SDDino.from_pretrained(config=cfg, dino_model=str(tiny_models["dino"]), device="cpu")


def _padded_reference(pipe, pair, pad: bool = True) -> np.ndarray:
    a = np.asarray(Image.open(pair.src_image).convert("RGB"))  # the TSS target
    b = np.asarray(Image.open(pair.trg_image).convert("RGB"))  # the TSS source
    h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    if pad:
        a, b = (np.pad(x, ((0, h - x.shape[0]), (0, w - x.shape[1]), (0, 0))) for x in (a, b))
    fa, fb = (pipe.extract([x])[0].maps["dino"].features[0] for x in (a, b))
    flow = _reference_nn_flow(fa, fb, a.shape[1], a.shape[0], unit=False)  # DINO: raw L2
    xs, ys = pair.src_kps[:, 0].astype(int), pair.src_kps[:, 1].astype(int)
    return pair.src_kps + flow[ys, xs]


def test_unequal_sizes_score_as_the_padding_rule_computes(pipe) -> None:
    pairs = load_pairs("tss", TSS, split="JODS")  # horse_shift: image2 is 8 px wider
    pair = pairs[0]
    assert pair.src_size != pair.trg_size
    pred = FlowPredictor(ModelPredictor(pipe))(pair)
    want = _padded_reference(pipe, pair)
    np.testing.assert_allclose(pred, want, atol=1e-4)
    unpadded = _padded_reference(pipe, pair, pad=False)[: len(want)]
    assert np.abs(unpadded - want).max() > 1  # padding changes the answer: the test can tell


def test_padded_images_never_come_from_the_per_image_cache(pipe) -> None:
    """Padded features depend on the partner: they are extracted apart (once per folder for
    both directions); a pair of equal sizes uses the per-image cache."""
    predict = FlowPredictor(ModelPredictor(pipe))
    shift = load_pairs("tss", TSS, split="JODS")  # two directions, unequal sizes
    for pair in shift:
        predict(pair)
    assert predict.base.cache.stats["extracted"] == 0  # the cache never saw a padded image
    assert predict.padded_extracted == 2 and predict.stats["extracted"] == 2
    mirror = load_pairs("tss", TSS, split="FG3DCar")  # equal sizes: no padding
    for pair in mirror:
        predict(pair)
    assert predict.base.cache.stats["extracted"] == 2 and predict.padded_extracted == 2
    assert predict.stats["extracted"] == 4
