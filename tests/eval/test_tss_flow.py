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
from sdcorr.eval.tss import FlowPredictor, pad_pair

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
    """Padded features depend on the partner: a padded image goes through the cache as the
    padded picture, never as its file (once per folder for both directions); a pair of equal
    sizes uses the files' entries."""
    from sdcorr.cache import content_key
    from sdcorr.pipeline import SDDino

    fresh = SDDino(pipe.config, dino=pipe.dino, cache_size=8)  # an empty cache
    predict = FlowPredictor(ModelPredictor(fresh))
    shift = load_pairs("tss", TSS, split="JODS")  # two directions, unequal sizes
    for pair in shift:
        predict(pair)
    assert fresh.cache.stats["extracted"] == 2  # the two padded images, each once
    files = (shift[0].src_image, shift[0].trg_image)
    padded = pad_pair(*(Image.open(p).convert("RGB") for p in files))
    short = [p for p, im in zip(files, padded, strict=True) if Image.open(p).size != im.size]
    assert len(short) == 1  # one image of the folder needs padding: its file is never extracted
    assert (*content_key(short[0]), None) not in fresh.cache._mem
    assert (*content_key(padded[files.index(short[0])]), None) in fresh.cache._mem
    mirror = load_pairs("tss", TSS, split="FG3DCar")  # equal sizes: no padding
    for pair in mirror:
        predict(pair)
    assert fresh.cache.stats["extracted"] == 4
    for pair in mirror:
        assert (*content_key(pair.src_image), None) in fresh.cache._mem
