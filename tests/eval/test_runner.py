"""The evaluation loop with a fake pipeline: outputs, image reuse, resume, sharding."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sdcorr.errors import OutputError
from sdcorr.eval.pairs import Pair
from sdcorr.eval.pck import summarize
from sdcorr.eval.protocol import resolve_protocol
from sdcorr.eval.runner import ModelPredictor, evaluate, group_by_image, shard
from sdcorr.eval.spair import load_spair

from .fakes import FakePipe, expected_prediction

CONFIG = {"eval": {"threshold": "bbox", "alphas": [0.1, 0.05, 0.01]}, "pipeline": "fake"}
SPAIR = resolve_protocol("spair")  # bbox, <, alphas 0.1 0.05 0.01
SPAIR_01 = resolve_protocol("spair", alphas=(0.1,))


def _reverse(p: Pair) -> Pair:
    """The same pair from target to source (a made-up name: pairs reuse each image twice)."""
    return dataclasses.replace(
        p, name=p.name.replace("-", "-r", 1), src_image=p.trg_image, trg_image=p.src_image,
        src_kps=p.trg_kps, trg_kps=p.src_kps, src_size=p.trg_size, trg_size=p.src_size,
        src_bbox=p.trg_bbox, trg_bbox=p.src_bbox,
    )  # fmt: skip


@pytest.fixture
def pairs(spair_root: Path) -> list[Pair]:
    base = load_spair(spair_root)
    return [q for p in base for q in (p, _reverse(p))]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_records_and_summary_extracting_each_image_once(pairs, tmp_path) -> None:
    pipe = FakePipe()
    summary = evaluate(pairs, ModelPredictor(pipe), tmp_path, CONFIG, SPAIR, quiet=True)
    assert len(pipe.calls) == 12  # 12 pairs over 12 images: each image extracted once
    assert {c for _, c in pipe.calls} == {None}  # the default is the empty prompt
    recs = _lines(tmp_path / "pairs.jsonl")
    assert [r["pair"] for r in recs] == [p.name for p in pairs]
    for r, p in zip(recs, pairs, strict=True):
        pred = expected_prediction(p.src_kps, p.src_size, p.trg_size)
        np.testing.assert_allclose(r["pred_kps"], pred)
        assert r["true_kps"] == p.trg_kps.tolist() and r["category"] == p.category
        assert set(r["hits"]) == {"0.1", "0.05", "0.01"} and len(r["hits"]["0.1"]) == p.num_kps
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"config", "pck", "by_protocol"}
    assert summary["config"] == CONFIG and summary["pck"] == summarize(recs)
    assert summary["by_protocol"]["bbox-lt"] == summary["pck"]  # the run's own protocol
    for r, p in zip(recs, pairs, strict=True):  # the threshold is the TARGET box's longer side
        x1, y1, x2, y2 = p.trg_bbox
        assert r["threshold_px"] == max(x2 - x1, y2 - y1)
    assert summary["pck"]["0.1"]["n_keypoints"] == 2 * (7 + 7 + 9 + 9 + 7 + 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "pairs.jsonl", "summary.json", "timing.json",
    ]  # fmt: skip


def test_resume_after_a_kill_recomputes_only_missing_pairs(pairs, tmp_path) -> None:
    first = evaluate(pairs, ModelPredictor(FakePipe()), tmp_path, CONFIG, SPAIR, quiet=True)
    jsonl = tmp_path / "pairs.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text("".join(lines[:4]) + lines[4][:25])  # killed while writing pair 5
    (tmp_path / "summary.json").unlink()
    pipe = FakePipe()
    second = evaluate(pairs, ModelPredictor(pipe), tmp_path, CONFIG, SPAIR, quiet=True)
    todo = pairs[4:]
    assert sorted(n for n, _ in pipe.calls) == sorted(
        {p.src_image.name for p in todo} | {p.trg_image.name for p in todo}
    )
    assert second == first
    assert jsonl.read_text() == "".join(lines)
    pipe = FakePipe()
    assert evaluate(pairs, ModelPredictor(pipe), tmp_path, CONFIG, SPAIR, quiet=True) == first
    assert pipe.calls == []  # a finished run recomputes nothing


def test_refuses_a_folder_of_another_config(pairs, tmp_path) -> None:
    evaluate(pairs[:2], ModelPredictor(FakePipe()), tmp_path, CONFIG, SPAIR, quiet=True)
    other = {**CONFIG, "pipeline": "other"}
    with pytest.raises(OutputError, match="another configuration"):
        evaluate(pairs[:2], ModelPredictor(FakePipe()), tmp_path, other, SPAIR, quiet=True)


def test_shards_partition_pairs_by_source_image(pairs) -> None:
    many = pairs * 3  # groups of 3 pairs per source image
    many = [dataclasses.replace(p, name=f"{i:06d}{p.name[6:]}") for i, p in enumerate(many)]
    for world in (1, 2, 3, 5):
        shards = [shard(many, r, world) for r in range(world)]
        names = [p.name for s in shards for p in s]
        assert sorted(names) == sorted(p.name for p in many)  # disjoint and covering
        for s in shards:
            srcs = {(p.category, p.src_image) for p in s}
            for g in group_by_image(many):
                in_s = [p for p in g if p in s]
                assert in_s in ([], g) or (g[0].category, g[0].src_image) not in srcs
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 3  # balanced up to one group


def test_score_pair_rejects_a_wrong_number_of_points(pairs) -> None:
    with pytest.raises(Exception, match="expected 7"):
        SPAIR.score(pairs[0], np.zeros((3, 2)))


def test_border_keypoints_are_kept_on_the_image(spair_root) -> None:
    """An annotation at x == W (on the far border) is matched, not rejected as off-image."""
    import torch

    from sdcorr.config import get_preset
    from sdcorr.pipeline import SDDino
    from sdcorr.testing import PositionOracle

    pair = load_spair(spair_root, "test")[0]
    w, h = pair.src_size
    pair = dataclasses.replace(pair, src_kps=np.array([[w, h], [0.0, 0.0]]), trg_kps=np.zeros((2, 2)),
                               kps_ids=("0", "1"))  # fmt: skip
    pipe = SDDino(get_preset("dino"), dino=PositionOracle(frame=224, stride=14))
    pred = ModelPredictor(pipe)(pair)
    assert pred.shape == (2, 2) and np.isfinite(pred).all()
    assert torch.as_tensor(pred).abs().max() < max(pair.trg_size)


def test_category_prompt_uses_natural_names(pairs, tmp_path) -> None:
    pipe = FakePipe()
    evaluate(pairs, ModelPredictor(pipe, use_category=True), tmp_path, CONFIG, SPAIR, quiet=True)
    names = {c for _, c in pipe.calls}
    assert names == {"aeroplane", "cow", "dog", "horse", "motorbike", "potted plant"}


def test_threshold_comes_from_the_target_box_not_the_source_box(pairs) -> None:
    """Scoring with the source box (a mutation) must fail: boxes differ in every pair here."""
    for p in pairs:
        tx1, ty1, tx2, ty2 = p.trg_bbox
        trg_len = max(tx2 - tx1, ty2 - ty1)
        p = dataclasses.replace(p, src_bbox=(0.0, 0.0, 2.0 * trg_len, 1.0))  # source box: 2x
        rec = SPAIR_01.score(p, p.trg_kps)
        assert rec["threshold_px"] == trg_len
        # a prediction just inside the target threshold and outside the source one (or the
        # reverse) is scored by the target's
        offset = 0.1 * trg_len * 0.999
        pred = p.trg_kps + np.array([offset, 0.0])
        assert SPAIR_01.score(p, pred)["hits"]["0.1"] == [True] * p.num_kps
        pred = p.trg_kps + np.array([0.1 * trg_len * 1.001, 0.0])
        assert SPAIR_01.score(p, pred)["hits"]["0.1"] == [False] * p.num_kps


def test_incomplete_records_are_redone(pairs, tmp_path) -> None:
    """A valid-JSON but incomplete line (no hits, or hits without an alpha) is redone."""
    first = evaluate(pairs, ModelPredictor(FakePipe()), tmp_path, CONFIG, SPAIR, quiet=True)
    jsonl = tmp_path / "pairs.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    rec4, rec5 = json.loads(lines[4]), json.loads(lines[5])
    del rec4["hits"]
    del rec5["hits"]["0.05"]
    jsonl.write_text("".join(lines[:4]) + json.dumps(rec4) + "\n" + json.dumps(rec5) + "\n"
                     + "".join(lines[6:]))  # fmt: skip
    (tmp_path / "summary.json").unlink()
    pipe = FakePipe()
    second = evaluate(pairs, ModelPredictor(pipe), tmp_path, CONFIG, SPAIR, quiet=True)
    assert second == first
    redone = {p.src_image.name for p in pairs[4:6]} | {p.trg_image.name for p in pairs[4:6]}
    assert sorted(n for n, _ in pipe.calls) == sorted(redone)  # those two pairs, nothing else
    assert jsonl.read_text() == "".join(lines)


def test_refusal_names_the_settings_that_differ(pairs, tmp_path) -> None:
    cfg = {**CONFIG, "eval": {**CONFIG["eval"], "root": "/data/SPair-71k"}}
    evaluate(pairs[:2], ModelPredictor(FakePipe()), tmp_path, cfg, SPAIR, quiet=True)
    same = {**cfg, "eval": {**cfg["eval"], "root": "/data/./SPair-71k/"}}
    evaluate(pairs[:2], ModelPredictor(FakePipe()), tmp_path, same, SPAIR, quiet=True)  # resumes
    other = {**cfg, "eval": {**cfg["eval"], "threshold": "img"}}
    with pytest.raises(OutputError) as err:
        evaluate(pairs[:2], ModelPredictor(FakePipe()), tmp_path, other, SPAIR, quiet=True)
    assert "eval.threshold: 'bbox' (previous run) != 'img' (this run)" in str(err.value)
    assert "eval.root" not in str(err.value) and "\n" not in str(err.value)


def test_flip_align_preset_matches_from_the_cached_mirror(spair_root, tiny_models) -> None:
    """With ``flip_align`` on (geoaware), the runner gives exactly what ``match_points`` gives,
    and extracts each source's mirror once (a runner that ignores the option, or re-extracts the
    mirror per pair, fails)."""
    from sdcorr.config import get_preset
    from sdcorr.pipeline import SDDino

    cfg = get_preset("dino")
    cfg = dataclasses.replace(
        cfg, dino=dataclasses.replace(cfg.dino, frame=224),
        match=dataclasses.replace(cfg.match, flip_align=True),
    )  # fmt: skip
    pipe = SDDino.from_pretrained(config=cfg, dino_model=str(tiny_models["dino"]), device="cpu")
    calls: list[bool] = []
    extract = pipe.extract

    def counting(images, category=None, mirrored=False):
        calls.append(mirrored)
        return extract(images, category, mirrored=mirrored)

    pipe.extract = counting
    base = load_spair(spair_root, categories=["dog", "cow"])
    pairs = [q for p in base for q in (p, _reverse(p))] + base  # every source used twice
    predictor = ModelPredictor(pipe)
    got = [predictor(pair) for pair in pairs]
    assert calls.count(True) == 4 and calls.count(False) == 4  # 4 images, each mirror once
    for pair, pred in zip(pairs, got, strict=True):
        src = np.clip(pair.src_kps, 0, np.array(pair.src_size[:2]) - 1)
        want = pipe.match_points(pair.src_image, pair.trg_image, src, flip_align=True)
        np.testing.assert_array_equal(pred, want.points_b.double().numpy())
    assert predictor.flip_align
