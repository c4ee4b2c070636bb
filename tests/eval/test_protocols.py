"""Every protocol from one run: ``by_protocol`` against independent computations.

Each reference here reads the raw annotation files (json, csv, numpy) and the stored
predictions itself, and pools the way the papers' code does; none goes through sdcorr's PCK.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sdcorr.eval.pck import keypoint_hits
from sdcorr.eval.protocol import resolve_protocol
from sdcorr.eval.runner import evaluate, load_predictions

DATA = Path(__file__).resolve().parents[1] / "data"
ALPHAS = ("0.1", "0.05", "0.01")


# ----------------------------------------------------------------- independent pooling
def _table(rows: list[tuple[str, np.ndarray]]) -> dict:
    """PCK table of ``(category, hits of one pair)`` rows: overall, per category, the plain
    and the pair-weighted means of the categories (percentages)."""

    def rates(rs: list[tuple[str, np.ndarray]]) -> dict:
        n = sum(len(h) for _, h in rs)
        return {"per_keypoint": 100 * sum(h.sum() for _, h in rs) / n,
                "per_image": 100 * np.mean([h.mean() for _, h in rs]),
                "n_pairs": len(rs), "n_keypoints": n}  # fmt: skip

    cats = sorted({c for c, _ in rows})
    per_cat = {c: rates([r for r in rows if r[0] == c]) for c in cats}
    out = rates(rows)
    for m in ("per_keypoint", "per_image"):
        out.setdefault("category_mean", {})[m] = np.mean([per_cat[c][m] for c in cats])
        w = sum(per_cat[c]["n_pairs"] * per_cat[c][m] for c in cats)
        out.setdefault("category_weighted", {})[m] = w / len(rows)
    out["per_category"] = per_cat
    return out


def _assert_tables_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k, v in want.items():
        if isinstance(v, dict):
            _assert_tables_equal(got[k], v)
        else:
            assert got[k] == pytest.approx(v, abs=1e-6), k


def _spair_reference(root: Path, stored: list[dict], threshold: str, le: bool) -> dict:
    """PCK of stored predictions from the SPair pair files (target bbox or image side)."""
    tables = {}
    for a in ALPHAS:
        rows = []
        for rec in stored:
            ann = json.loads((root / "PairAnnotation/test" / f"{rec['pair']}.json").read_text())
            x1, y1, x2, y2 = ann["trg_bndbox"]
            w, h = ann["trg_imsize"][:2]
            length = max(x2 - x1, y2 - y1) if threshold == "bbox" else max(w, h)
            d = np.linalg.norm(np.array(rec["pred_kps"]) - np.array(ann["trg_kps"]), axis=1)
            limit = float(a) * length
            rows.append((ann["category"], d <= limit if le else d < limit))
        tables[a] = _table(rows)
    return tables


def _spair_predictions(root: Path, path: Path) -> None:
    """Truth plus noise, and some keypoints exactly α_img·L to the right (ties)."""
    rng = np.random.default_rng(3)
    with open(path, "w") as f:
        for p in resolve_protocol("spair").load_pairs(root):
            pred = p.trg_kps + rng.normal(0, 0.07 * max(p.trg_size), p.trg_kps.shape)
            side = max(p.trg_size)
            if side == 500:  # 0.1 * 500 and 0.05 * 500 are exact in float64
                pred[0] = p.trg_kps[0] + [0.1 * side, 0]
                pred[1] = p.trg_kps[1] + [0.05 * side, 0]
            f.write(json.dumps({"pair": p.name, "pred_kps": pred.tolist()}) + "\n")


def test_spair_mini_every_protocol_equals_an_independent_computation(spair_root, tmp_path):
    _spair_predictions(spair_root, tmp_path / "p.jsonl")
    protocol = resolve_protocol("spair")  # the default run: bbox, <
    pairs = protocol.load_pairs(spair_root)
    out = tmp_path / "out"
    evaluate(pairs, load_predictions(tmp_path / "p.jsonl", pairs), out, {}, protocol, quiet=True)
    summary = json.loads((out / "summary.json").read_text())
    stored = [json.loads(s) for s in (out / "pairs.jsonl").read_text().splitlines()]
    by = summary["by_protocol"]
    assert set(by) == {"bbox-lt", "bbox-le", "img-lt", "img-le"}
    for key in by:
        threshold, compare = key.split("-")
        _assert_tables_equal(by[key], _spair_reference(spair_root, stored, threshold,
                                                       compare == "le"))  # fmt: skip
    assert by["bbox-lt"] == summary["pck"]
    # the tables differ where they should: the image side is longer than the box side, and
    # the ties at 0.1 * 500 px count only with <=
    assert by["img-lt"]["0.1"]["per_keypoint"] > by["bbox-lt"]["0.1"]["per_keypoint"]
    assert by["img-le"]["0.1"]["n_keypoints"] == by["img-lt"]["0.1"]["n_keypoints"] == 43
    assert by["img-le"]["0.1"]["per_keypoint"] > by["img-lt"]["0.1"]["per_keypoint"]


# ----------------------------------------------------------------- SD4Match's PF-Willow
def _sd4match_pf_willow(root: Path, stored: dict[str, list], alpha: float) -> list[np.ndarray]:
    """SD4Match's ``PFWillowDataset`` + ``PCKEvaluator`` (by image), rewritten: both images
    stretched to 768 x 768 in float32, the threshold the largest side of the stretched target
    points, those points then regularised 1e-4 inside the border, ``<=`` in float32."""
    from PIL import Image

    with open(root / "test_pairs_pf.csv") as f:
        rows = list(csv.reader(f))[1:]
    out = []
    for i, r in enumerate(rows):
        v = np.array([float(x) for x in r[2:]], dtype=np.float32).reshape(4, 10)
        w, h = Image.open(root / r[1]).size
        trg = torch.tensor(np.stack([v[2] * (768 / w), v[3] * (768 / h)]))  # (2, 10) float32
        thres = torch.max(trg.max(1)[0] - trg.min(1)[0]).item()
        trg = trg.T.clone()
        for axis in (0, 1):
            c = trg[:, axis]
            c[c <= 0] = 1e-4
            c[c >= 767] = 767 - 1e-4
        pred = torch.tensor(stored[str(i)], dtype=torch.float64)
        pred = (pred * torch.tensor([768 / w, 768 / h], dtype=torch.float64)).float()
        diff = torch.norm(trg - pred, dim=-1)
        out.append((diff <= alpha * thres).numpy())
    return out


def test_pf_willow_sd4match_protocol_equals_its_evaluator(tmp_path) -> None:
    root = DATA / "pf-willow-mini"
    protocol = resolve_protocol("pf-willow")
    pairs = protocol.load_pairs(root)
    rng = np.random.default_rng(0)
    preds = {p.name: (p.trg_kps + rng.normal(0, 6.0, p.trg_kps.shape)).tolist() for p in pairs}
    with open(tmp_path / "p.jsonl", "w") as f:
        f.writelines(json.dumps({"pair": k, "pred_kps": v}) + "\n" for k, v in preds.items())
    evaluate(pairs, load_predictions(tmp_path / "p.jsonl", pairs), tmp_path / "o", {}, protocol,
             quiet=True)  # fmt: skip
    by = json.loads((tmp_path / "o" / "summary.json").read_text())["by_protocol"]
    assert set(by) == {"kps-lt", "kps-le", "img-lt", "img-le", "kps-le@768"}
    differ = 0
    for a in (0.05, 0.1, 0.15):
        hits = _sd4match_pf_willow(root, preds, a)
        table = by["kps-le@768"][f"{a:g}"]
        assert table["per_image"] == pytest.approx(100 * np.mean([h.mean() for h in hits]))
        assert table["per_keypoint"] == pytest.approx(100 * np.concatenate(hits).mean())
        for p, h in zip(pairs, hits, strict=True):
            ours = keypoint_hits(preds[p.name], p.trg_kps, np.ptp(p.trg_kps, axis=0).max(), (a,))
            differ += int((np.array(ours[f"{a:g}"]) != h).sum())
    assert differ > 0  # the stretched frame gives other verdicts than original pixels


# ----------------------------------------------------------------- TSS ties in float32
def test_float32_comparison_counts_the_references_ties() -> None:
    """sd-dino's TSS compares a float32 end-point error with ``α · L`` (a Python float, so
    float32 too) by ``<=``: errors that round to the threshold count, as here."""
    rng = np.random.default_rng(0)
    length = 333.0
    true = rng.uniform(0, 300, (400, 2)).astype(np.float32).astype(np.float64)
    angle = rng.uniform(0, 2 * np.pi, 400)
    radius = 0.15 * length * (1 + rng.choice([-1, 0, 1], 400) * 3e-8)  # ties within rounding
    flow_err = np.stack([np.cos(angle), np.sin(angle)], 1) * radius[:, None]
    pred = (true + flow_err).astype(np.float32).astype(np.float64)
    ref = torch.sum((torch.tensor(pred).float() - torch.tensor(true).float()) ** 2, 1).sqrt()
    want = ref.le(0.15 * length).tolist()
    got = keypoint_hits(pred, true, length, (0.15,), "le", "float32")["0.15"]
    assert got == want
    assert got != keypoint_hits(pred, true, length, (0.15,), "le")["0.15"]  # float64 differs


def test_tss_records_keep_both_comparisons(tmp_path) -> None:
    """Compact TSS records store the counts of both comparisons, so ``by_protocol`` has
    ``img-lt`` and ``img-le`` from one run; exact ties separate them."""
    root = DATA / "tss-mini" / "TSS_CVPR2016"
    protocol = resolve_protocol("tss")
    pairs = protocol.load_pairs(root)
    with open(tmp_path / "p.jsonl", "w") as f:
        for p in pairs:  # every other pixel exactly 0.05 * L off (L = 64 or 72: exact)
            pred = p.trg_kps.copy()
            pred[::2, 0] += 0.05 * max(p.trg_size)
            f.write(json.dumps({"pair": p.name, "pred_kps": pred.tolist()}) + "\n")
    evaluate(pairs, load_predictions(tmp_path / "p.jsonl", pairs), tmp_path / "o", {}, protocol,
             quiet=True)  # fmt: skip
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    le, lt = summary["by_protocol"]["img-le"]["0.05"], summary["by_protocol"]["img-lt"]["0.05"]
    assert summary["by_protocol"]["img-le"] == summary["pck"]  # TSS's own: <=
    assert le["per_keypoint"] == 100.0
    n = sum(p.num_kps for p in pairs)
    assert lt["per_keypoint"] == pytest.approx(100 * sum(p.num_kps // 2 for p in pairs) / n)
