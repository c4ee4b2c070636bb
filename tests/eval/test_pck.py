"""PCK@α against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from sdcorr.errors import ConfigError
from sdcorr.eval.pck import keypoint_hits, markdown_table, summarize, threshold_length


def test_threshold_lengths() -> None:
    assert threshold_length((10, 20, 110, 70), (500, 300), "bbox") == 100  # max(100, 50)
    assert threshold_length((14, 71, 483, 220), (500, 334), "bbox") == 469  # fixture pair 167
    assert threshold_length((10, 20, 110, 70), (300, 500), "img") == 500
    with pytest.raises(ConfigError, match="bbox, img"):
        threshold_length((0, 0, 1, 1), (1, 1), "box")


def test_hits_strict_at_the_edge() -> None:
    true = np.array([[50.0, 50.0], [60.0, 40.0], [20.0, 30.0], [70.0, 60.0]])
    offsets = np.array([[6.0, 8.0], [0.0, -3.0], [0.3, 0.4], [-3.0, 4.0]])  # 10, 3, 0.5, 5 px
    assert 0.1 * 100 == 10.0 and 0.05 * 100 == 5.0 and 0.01 * 100 == 1.0  # exact edges
    hits = keypoint_hits(true + offsets, true, 100.0, (0.1, 0.05, 0.01))
    assert hits == {
        "0.1": [False, True, True, True],  # 10 px == 0.1 * 100 is a miss
        "0.05": [False, True, True, False],  # 5 px == 0.05 * 100 is a miss
        "0.01": [False, False, True, False],
    }


def test_perfect_predictions_give_100() -> None:
    true = np.array([[1.0, 2.0], [3.0, 4.0]])
    rec = {"pair": "p", "category": "cat", "hits": keypoint_hits(true, true, 7.0)}
    pck = summarize([rec])
    for key in ("0.1", "0.05", "0.01"):
        assert pck[key]["per_keypoint"] == 100.0 and pck[key]["per_image"] == 100.0
        assert pck[key]["per_category"]["cat"]["per_image"] == 100.0


def test_per_image_and_per_keypoint_differ() -> None:
    recs = [
        {"pair": "a1", "category": "a", "hits": {"0.1": [True, False, False, False]}},
        {"pair": "a2", "category": "a", "hits": {"0.1": [True]}},
        {"pair": "b1", "category": "b", "hits": {"0.1": [False, False]}},
    ]
    t = summarize(recs, (0.1,))["0.1"]
    assert t["per_keypoint"] == pytest.approx(100 * 2 / 7)
    assert t["per_image"] == pytest.approx(100 * (0.25 + 1 + 0) / 3)
    assert t["per_category"]["a"] == {
        "per_keypoint": pytest.approx(40.0), "per_image": pytest.approx(62.5),
        "n_pairs": 2, "n_keypoints": 5,
    }  # fmt: skip
    assert t["per_category"]["b"]["per_keypoint"] == 0.0
    assert t["category_mean"] == {"per_keypoint": 20.0, "per_image": 31.25}
    assert (t["n_pairs"], t["n_keypoints"]) == (3, 7)
    # record order never changes a bit of the result
    assert summarize(recs[::-1], (0.1,)) == summarize(recs, (0.1,))
    table = markdown_table(summarize(recs, (0.1,)), "per_image")
    assert "| a | 2 | 62.50 |" in table and "| **all** | 3 | 41.67 |" in table


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="3 predicted keypoints for 2"):
        keypoint_hits(np.zeros((3, 2)), np.zeros((2, 2)), 10.0)


def test_kps_threshold_and_inclusive_comparison() -> None:
    kps = np.array([[10.0, 20.0], [40.0, 25.0], [30.0, 60.0]])
    assert threshold_length((0, 0, 1, 1), (9, 9), "kps", kps) == 40.0  # max(30, 40)
    true = np.zeros((2, 2))
    pred = np.array([[3.0, 4.0], [0.0, 2.0]])  # 5 px and 2 px
    assert keypoint_hits(pred, true, 50.0, (0.1,)) == {"0.1": [False, True]}
    assert keypoint_hits(pred, true, 50.0, (0.1,), compare="le") == {"0.1": [True, True]}


def test_category_weighted_is_sd_dinos_weighted_mean() -> None:
    recs = [
        {"pair": "a1", "category": "a", "hits": {"0.1": [True, False, False, False]}},
        {"pair": "a2", "category": "a", "hits": {"0.1": [True]}},
        {"pair": "a3", "category": "a", "hits": {"0.1": [True, True]}},
        {"pair": "b1", "category": "b", "hits": {"0.1": [False, False]}},
    ]
    t = summarize(recs, (0.1,))["0.1"]
    # per category pooled over keypoints: a = 4/7, b = 0; weights = pair counts 3 and 1
    assert t["category_weighted"]["per_keypoint"] == pytest.approx(100 * (3 * 4 / 7 + 0) / 4)
    assert t["category_mean"]["per_keypoint"] == pytest.approx(100 * (4 / 7) / 2)
    assert t["category_weighted"]["per_image"] == pytest.approx(t["per_image"])
    assert "| *category weighted* | | 42.86 |" in markdown_table(
        summarize(recs, (0.1,)), "per_keypoint"
    )


def test_compact_records_score_like_full_ones() -> None:
    full = [
        {"pair": "a", "category": "x", "hits": {"0.1": [True, False, True]}},
        {"pair": "b", "category": "y", "hits": {"0.1": [False]}},
    ]
    compact = [
        {"pair": "a", "category": "x", "n_kps": 3, "hit_counts": {"0.1": 2}},
        {"pair": "b", "category": "y", "n_kps": 1, "hit_counts": {"0.1": 0}},
    ]
    assert summarize(compact, (0.1,)) == summarize(full, (0.1,))
