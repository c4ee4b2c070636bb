"""``benchmarks/flip_probe.py``: trials from SPair's pose labels, semantic truth in mirrors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[2]


def _probe():
    spec = importlib.util.spec_from_file_location(
        "flip_probe", REPO / "benchmarks" / "flip_probe.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_trials_follow_the_pose_labels(spair_root, tmp_path) -> None:
    trials = _probe().trials(spair_root, tmp_path)
    # only dog (Left/Right) and horse (Right/Right) have both poses Left or Right
    assert [t.label.split()[0] for t in trials] == ["dog"] * 4 + ["horse"] * 4
    assert [t.flip for t in trials] == [True, False, True, False, False, True, False, True]
    assert [t.pair.num_kps for t in trials] == [9, 9, 9, 9, 9, 8, 9, 8]
    dog = json.loads((spair_root / "ImageAnnotation/dog/2011_002398.json").read_text())
    forward, mirrored = trials[0].pair, trials[1].pair
    np.testing.assert_array_equal(forward.trg_kps[forward.kps_ids.index("9")], dog["kps"]["9"])
    # in the mirror of B, keypoint 9 (a left part) is B's keypoint 10 (its right partner)
    w = dog["image_width"]
    x, y = dog["kps"]["10"]
    np.testing.assert_array_equal(mirrored.trg_kps[mirrored.kps_ids.index("9")], [w - 1 - x, y])
    expected = ImageOps.mirror(Image.open(forward.trg_image).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(mirrored.trg_image)), np.asarray(expected))


def test_report_counts_decisions_and_keypoints(capsys) -> None:
    rows = [
        {"trial": "a", "right": True, "chosen": True, "distance": 1.0, "distance_flipped": 0.5,
         "keypoints": 3, "hits": {"none": 1, "flip": 2, "oracle": 2}},
        {"trial": "b", "right": False, "chosen": True, "distance": 0.4, "distance_flipped": 0.3,
         "keypoints": 1, "hits": {"none": 1, "flip": 0, "oracle": 1}},
    ]  # fmt: skip
    total = _probe().report(rows, 0.1)
    assert total["decisions_right"] == 1 and total["trials"] == 2 and total["keypoints"] == 4
    assert (total["pck_none"], total["pck_flip"], total["pck_oracle"]) == (50.0, 50.0, 75.0)
    assert "decisions right: 1 of 2" in capsys.readouterr().out
