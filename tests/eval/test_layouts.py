"""PF-Willow and PF-Pascal in every layout users get: a ``--predictions`` run scores the same.

The committed fixtures are in the download layouts (PF-Willow: ``test_pairs_pf.csv`` beside
``PF-dataset/``; PF-Pascal: as after sd-dino's ``prepare_pfpascal.sh``, the list inside
``PF-dataset-PASCAL/``); the other layouts are made here from them, exactly as the peers'
scripts move the files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sdcorr.errors import DatasetError
from sdcorr.eval.protocol import resolve_protocol
from sdcorr.eval.runner import evaluate, load_predictions

DATA = Path(__file__).resolve().parents[1] / "data"
PF_WILLOW, PF_PASCAL = DATA / "pf-willow-mini", DATA / "pf-pascal-mini"


def _copy(src: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(src, tmp_path / name))


def _run(dataset: str, root: Path, preds: Path, out: Path) -> dict:
    protocol = resolve_protocol(dataset)
    pairs = protocol.load_pairs(root)
    evaluate(pairs, load_predictions(preds, pairs), out, {"root": "same"}, protocol, quiet=True)
    summary = json.loads((out / "summary.json").read_text())
    return {"pck": summary["pck"], "by_protocol": summary["by_protocol"],
            "pairs": (out / "pairs.jsonl").read_text()}  # fmt: skip


def _noisy_predictions(dataset: str, root: Path, path: Path) -> Path:
    rng = np.random.default_rng(1)
    with open(path, "w") as f:
        for p in resolve_protocol(dataset).load_pairs(root):
            pred = p.trg_kps + rng.normal(0, 6.0, p.trg_kps.shape)
            f.write(json.dumps({"pair": p.name, "pred_kps": pred.tolist()}) + "\n")
    return path


def test_pf_willow_scores_the_same_in_every_layout(tmp_path) -> None:
    preds = _noisy_predictions("pf-willow", PF_WILLOW, tmp_path / "p.jsonl")
    # CNNGeometric/NCNet download: only test_pairs_pf.csv, beside PF-dataset/ (committed)
    download = _run("pf-willow", PF_WILLOW, preds, tmp_path / "a")
    assert 0 < download["pck"]["0.1"]["per_keypoint"] < 100
    today = _copy(PF_WILLOW, tmp_path, "today")  # the list named test_pairs.csv (SD4Match)
    (today / "test_pairs_pf.csv").rename(today / "test_pairs.csv")
    assert _run("pf-willow", today, preds, tmp_path / "b") == download
    inside = _copy(PF_WILLOW, tmp_path, "inside")  # `mv test_pairs_pf.csv PF-dataset`
    (inside / "test_pairs_pf.csv").rename(inside / "PF-dataset" / "test_pairs_pf.csv")
    assert _run("pf-willow", inside, preds, tmp_path / "c") == download
    assert _run("pf-willow", inside / "PF-dataset", preds, tmp_path / "d") == download


def test_pf_pascal_scores_the_same_in_every_layout(tmp_path) -> None:
    preds = _noisy_predictions("pf-pascal", PF_PASCAL, tmp_path / "p.jsonl")
    # after prepare_pfpascal.sh (committed): --root at the parent of PF-dataset-PASCAL/ ...
    parent = _run("pf-pascal", PF_PASCAL, preds, tmp_path / "a")
    assert 0 < parent["pck"]["0.1"]["per_keypoint"] < 100
    # ... or at PF-dataset-PASCAL/ itself (images resolved as {list folder}/../{path})
    inside = _run("pf-pascal", PF_PASCAL / "PF-dataset-PASCAL", preds, tmp_path / "b")
    assert inside == parent
    today = _copy(PF_PASCAL, tmp_path, "today")  # the lists beside PF-dataset-PASCAL/
    (today / "PF-dataset-PASCAL" / "test_pairs_pf_pascal.csv").rename(
        today / "test_pairs_pf_pascal.csv"
    )
    assert _run("pf-pascal", today, preds, tmp_path / "c") == parent


@pytest.mark.parametrize(
    ("dataset", "root", "lists"),
    [
        ("pf-willow", PF_WILLOW, ["test_pairs_pf.csv", "test_pairs.csv"]),
        ("pf-pascal", PF_PASCAL, ["test_pairs_pf_pascal.csv", "test_pairs.csv"]),
    ],
)
def test_a_missing_list_names_every_place_looked_at(dataset, root, lists, tmp_path) -> None:
    bare = _copy(root, tmp_path, "bare")
    for csv in bare.rglob("*.csv"):
        csv.unlink()
    folder = next(p.name for p in bare.iterdir() if p.is_dir())
    with pytest.raises(DatasetError) as err:
        resolve_protocol(dataset).load_pairs(bare)
    msg = str(err.value)
    assert msg.startswith(f"pair list not found: {bare / lists[0]}") and "\n" not in msg
    for name in lists:
        assert str(bare / name) in msg and str(bare / folder / name) in msg


def test_images_are_looked_for_beside_the_list_and_above_it(tmp_path) -> None:
    root = _copy(PF_PASCAL, tmp_path, "moved")
    shutil.rmtree(root / "PF-dataset-PASCAL" / "JPEGImages")
    with pytest.raises(DatasetError) as err:
        resolve_protocol("pf-pascal").load_pairs(root)
    msg = str(err.value)
    listed = "PF-dataset-PASCAL/JPEGImages/2008_007604.jpg"
    assert msg.startswith("image file not found") and "\n" not in msg
    assert str(root / "PF-dataset-PASCAL" / listed) in msg and str(root / listed) in msg
