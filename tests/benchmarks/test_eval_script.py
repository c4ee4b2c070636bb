"""``benchmarks/eval.py`` on every dataset fixture: exact scores of hand-made predictions
(checked against independent computations of each protocol), errors before any model loads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdcorr.commands.eval import main

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "eval.py"
DATA = REPO / "tests" / "data"
ROOTS = {
    "pf-pascal": DATA / "pf-pascal-mini",
    "pf-willow": DATA / "pf-willow-mini",
    "ap10k": DATA / "ap10k-mini",
    "tss": DATA / "tss-mini" / "TSS_CVPR2016",
}


def eval_main(argv: list[str]) -> int:
    """``sdcorr eval ARGV`` (what ``benchmarks/eval.py ARGV`` runs), in this process."""
    return main(argv)


# ----------------------------------------------------------------- independent ground truth
# Each reads the raw files with its own code (csv, json, numpy), never through sdcorr.eval.
def _pf_pascal_truth(root: Path) -> list[dict]:
    with open(root / "PF-dataset-PASCAL" / "test_pairs_pf_pascal.csv") as f:  # paths: from root
        rows = list(csv.DictReader(f))
    out = []
    for i, r in enumerate(rows):
        xb = [float(v) for v in r["XB"].split(";")]
        yb = [float(v) for v in r["YB"].split(";")]
        w, h = Image.open(root / r["target_image"]).size
        out.append({"pair": str(i), "true": np.array([xb, yb]).T, "L": max(w, h), "le": False})
    return out


def _pf_willow_truth(root: Path) -> list[dict]:
    with open(root / "test_pairs_pf.csv") as f:
        rows = list(csv.reader(f))[1:]
    out = []
    for i, r in enumerate(rows):
        v = np.array([float(x) for x in r[2:]]).reshape(4, 10)
        true = np.stack([v[2], v[3]], axis=1)
        extent = true.max(axis=0) - true.min(axis=0)
        out.append({"pair": str(i), "true": true, "L": float(extent.max()), "le": False})
    return out


def _ap10k_truth(root: Path) -> list[dict]:
    out = []
    for f in sorted((root / "PairAnnotation" / "test").glob("*.json")):
        pair = json.loads(f.read_text())
        src, trg = (json.loads((root / pair[k].split("ap-10k/", 1)[1]).read_text())
                    for k in ("src_json_path", "trg_json_path"))  # fmt: skip
        ks, kt = (
            np.array(src["keypoints"]).reshape(17, 3),
            np.array(trg["keypoints"]).reshape(17, 3),
        )
        both = (ks[:, 2] > 0) & (kt[:, 2] > 0)
        out.append({"pair": f.stem, "true": kt[both, :2], "L": max(trg["bbox"][2:]), "le": False})
    return out


def _tss_truth(root: Path) -> list[dict]:
    out = []
    for sub in ("FG3DCar", "JODS", "PASCAL"):
        for folder in sorted((root / sub).iterdir()):
            for s, t in ((1, 2), (2, 1)):
                raw = np.fromfile(folder / f"flow{t}.flo", np.float32)
                w, h = raw[1:3].view(np.int32)
                flow = raw[3:].reshape(h, w, 2)
                mask = np.asarray(Image.open(folder / f"mask{t}.png")) == 255
                ys, xs = np.nonzero(mask)
                true = np.stack([xs, ys], 1) + flow[ys, xs]
                side = max(Image.open(folder / f"image{s}.png").size)
                name = f"{sub}/{folder.name}/image{s}-image{t}"
                out.append({"pair": name, "true": true, "L": side, "le": True})
    return out


TRUTH = {"pf-pascal": _pf_pascal_truth, "pf-willow": _pf_willow_truth, "ap10k": _ap10k_truth,
         "tss": _tss_truth}  # fmt: skip
ALPHAS = (0.05, 0.1, 0.15)


def _predictions(truth: list[dict], path: Path, seed: int = 0) -> list[np.ndarray]:
    """Truth plus noise of about α·L so that every α has hits and misses."""
    rng = np.random.default_rng(seed)
    preds = []
    with open(path, "w") as f:
        for t in truth:
            p = t["true"] + rng.normal(0, 0.08 * t["L"], t["true"].shape)
            preds.append(p)
            f.write(json.dumps({"pair": t["pair"], "pred_kps": p.tolist()}) + "\n")
    return preds


def _expected(truth: list[dict], preds: list[np.ndarray], alpha: float) -> tuple[float, float]:
    hits = []
    for t, p in zip(truth, preds, strict=True):
        d = np.sqrt(((p - t["true"]) ** 2).sum(axis=1))
        hits.append(d <= alpha * t["L"] if t["le"] else d < alpha * t["L"])
    per_kp = 100 * sum(h.sum() for h in hits) / sum(len(h) for h in hits)
    per_img = 100 * np.mean([h.mean() for h in hits])
    return per_kp, per_img


@pytest.mark.parametrize("dataset", list(ROOTS))
def test_predictions_score_as_computed_independently(dataset, tmp_path) -> None:
    truth = TRUTH[dataset](ROOTS[dataset])
    preds = _predictions(truth, tmp_path / "preds.jsonl")
    out = tmp_path / "out"
    argv = [
        "--dataset",
        dataset,
        "--root",
        str(ROOTS[dataset]),
        "--predictions",
        str(tmp_path / "preds.jsonl"),
        "--out",
        str(out),
        "--alphas",
        *map(str, ALPHAS),
        "-q",
    ]
    assert eval_main(argv) == 0
    pck = json.loads((out / "summary.json").read_text())["pck"]
    assert pck["0.1"]["n_pairs"] == len(truth)
    for a in ALPHAS:
        per_kp, per_img = _expected(truth, preds, a)
        assert 0 < per_kp < 100  # the noise gives hits and misses
        assert pck[f"{a:g}"]["per_keypoint"] == pytest.approx(per_kp, abs=1e-3)
        assert pck[f"{a:g}"]["per_image"] == pytest.approx(per_img, abs=1e-3)
    recs = [json.loads(s) for s in (out / "pairs.jsonl").read_text().splitlines()]
    assert [r["pair"] for r in recs] == [t["pair"] for t in truth]
    for r, t in zip(recs, truth, strict=True):
        assert r["threshold_px"] == pytest.approx(t["L"])  # from the TARGET (TSS: source image)


def test_the_other_threshold_or_comparison_changes_the_score(tmp_path) -> None:
    """Guards against a harness that ignores the dataset's protocol: α_bbox-style thresholds
    or ``<`` instead of ``<=`` give other numbers on the same predictions."""
    root = ROOTS["pf-willow"]
    truth = _pf_willow_truth(root)
    _predictions(truth, tmp_path / "p.jsonl")
    base = [
        "--dataset",
        "pf-willow",
        "--root",
        str(root),
        "--predictions",
        str(tmp_path / "p.jsonl"),
        "-q",
    ]
    main = eval_main
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--threshold", "img"]) == 0
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "ab")
    assert a["pck"]["0.1"]["per_keypoint"] < b["pck"]["0.1"]["per_keypoint"]
    assert a["config"]["eval"]["threshold"] == "kps" and a["config"]["eval"]["compare"] == "lt"


def test_inclusive_comparison_counts_the_edge(tmp_path, spair_root) -> None:
    """``--compare le`` (DIFT's ``<=``) counts an error of exactly α·L; the default does not."""
    from sdcorr.eval.spair import load_spair

    pairs = load_spair(spair_root)
    with open(tmp_path / "p.jsonl", "w") as f:
        for p in pairs:  # exactly 0.5 · L to the right (integers and halves: exact)
            x1, y1, x2, y2 = p.trg_bbox
            pred = p.trg_kps + np.array([0.5 * max(x2 - x1, y2 - y1), 0.0])
            f.write(json.dumps({"pair": p.name, "pred_kps": pred.tolist()}) + "\n")
    base = ["--dataset", "spair", "--root", str(spair_root), "--predictions", str(tmp_path / "p.jsonl"),
            "--alphas", "0.5", "-q"]  # fmt: skip
    main = eval_main
    assert main([*base, "--out", str(tmp_path / "lt")]) == 0
    assert main([*base, "--out", str(tmp_path / "le"), "--compare", "le"]) == 0
    lt, le = (
        json.loads((tmp_path / d / "summary.json").read_text())["pck"]["0.5"] for d in ("lt", "le")
    )
    assert lt["per_keypoint"] == 0.0 and le["per_keypoint"] == 100.0


@pytest.mark.parametrize(
    ("dataset", "edit", "message"),
    [
        (
            "pf-pascal",
            ("PF-dataset-PASCAL/test_pairs_pf_pascal.csv", ",10,", ",0,"),
            "test_pairs_pf_pascal.csv:3: malformed row",
        ),
        ("pf-willow", ("test_pairs_pf.csv", ".png,", ".jpg,"), "image file not found"),
        (
            "ap10k",
            ("PairAnnotation/test/2007_005797-2009_003189:cow.json", "src_json_path", "src"),
            "missing field 'src_json_path'",
        ),
    ],
)
def test_dataset_errors_exit_2_before_any_model_loads(dataset, edit, message, tmp_path, capsys,
                                                      monkeypatch) -> None:  # fmt: skip
    import shutil

    from sdcorr.pipeline import SDDino

    root = Path(shutil.copytree(ROOTS[dataset], tmp_path / "root"))
    file, old, new = edit
    (root / file).write_text((root / file).read_text().replace(old, new, 1))
    monkeypatch.setattr(SDDino, "from_pretrained", lambda *a, **k: pytest.fail("model loaded"))
    argv = ["--dataset", dataset, "--root", str(root), "--out", str(tmp_path / "o"), "-q"]
    assert eval_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # nothing written either


def test_launcher_refuses_dino_frame_100_in_one_line_and_writes_nothing(tmp_path) -> None:
    """``benchmarks/eval.py`` as a script (a subprocess): the option is refused before any model
    loads (none is available: the hub is offline and no model folder is given)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    argv = ["--dataset", "spair", "--root", str(DATA / "spair-mini" / "SPair-71k"), "--out",
            str(out), "--dino-frame", "100"]  # fmt: skip
    proc = subprocess.run([sys.executable, str(SCRIPT), *argv], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.startswith("error: --dino-frame must be positive and a multiple of")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
