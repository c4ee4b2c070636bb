"""Block-wise iBOT masks: ratios, block shapes, probability; the collated mask tensors."""

from __future__ import annotations

import math

import numpy as np
import torch

from sdcorr.pretrain.data import collate_masks
from sdcorr.pretrain.masking import _add_block, batch_masks, block_mask


def test_single_block_is_a_rectangle() -> None:
    rng = np.random.default_rng(0)
    aspects = []
    for _ in range(200):
        m = np.zeros((16, 16), dtype=bool)
        added = _add_block(m, 40, rng, 4, (math.log(0.3), math.log(1 / 0.3)), 10)
        ys, xs = np.nonzero(m)
        assert added == m.sum() and 1 <= added <= 40  # rounding may undershoot 4
        box = m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        assert box.all()  # one block: its bounding box is entirely masked
        aspects.append(box.shape[0] / box.shape[1])
    assert min(aspects) < 0.5 and max(aspects) > 2  # log-uniform aspect in [0.3, 3.3]
    assert min(aspects) >= 0.15 and max(aspects) <= 1 / 0.15


def test_block_mask_never_exceeds_request() -> None:
    rng = np.random.default_rng(1)
    counts = [block_mask((16, 16), n, rng).sum() for n in (10, 40, 80, 128) for _ in range(20)]
    requests = [n for n in (10, 40, 80, 128) for _ in range(20)]
    assert all(0 < c <= r for c, r in zip(counts, requests, strict=True))
    assert np.mean(np.array(counts) / np.array(requests)) > 0.8


def test_batch_masks_probability_and_ratio() -> None:
    rng = np.random.default_rng(2)
    for n_crops in (2, 8, 20, 64):
        m = batch_masks(n_crops, (16, 16), rng, ratio=(0.1, 0.5), probability=0.5)
        assert m.shape == (n_crops, 256) and m.dtype == bool
        masked = m.any(1)
        assert masked.sum() == n_crops // 2  # exactly int(n * p) crops masked
        ratios = m[masked].mean(1)
        assert (ratios <= 0.5).all() and (ratios > 0.0).all()
    many = batch_masks(400, (16, 16), rng, probability=0.25)
    assert many.any(1).sum() == 100
    assert 0.2 < many[many.any(1)].mean() < 0.33  # stratified ratios over 0.1-0.5
    assert not batch_masks(8, (16, 16), rng, probability=0.0).any()


def test_collate_masks_indices_and_weights() -> None:
    m = np.zeros((4, 9), dtype=bool)
    m[1, [0, 4]] = True
    m[3, [2, 3, 8]] = True
    out = collate_masks(m)
    assert out["masks"].shape == (4, 9) and out["masks"].dtype == torch.bool
    assert out["mask_indices"].tolist() == [9, 13, 29, 30, 35]
    assert torch.allclose(out["mask_weights"], torch.tensor([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3]))
    assert int(out["n_masked"]) == 5
    # per masked crop the weights sum to 1
    assert out["mask_weights"].sum().item() == 2.0
