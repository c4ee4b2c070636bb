"""Flip alignment against SPair's pose labels: is the decision right, and does it pay?

For every SPair pair whose two images are labelled ``Left`` or ``Right`` (``src_pose``,
``trg_pose``), and by default the same pair reversed, two trials: the source A against the
target B, and A against the horizontal mirror of B (the mirror of a Left image faces Right).
The right decision follows from the labels: flip A exactly when its pose differs from the
target's. The truth in mirror(B) is semantic, as in SPair's mirrored pairs: keypoint ``k`` sits
at the mirrored position of its left/right partner (a mirrored left eye is a right eye),
read from B's ``ImageAnnotation``; a keypoint is scored when it is labelled in A and its truth
is labelled in B.

Reported per trial and in all: the decision and its two instance distances, decision accuracy,
and PCK@alpha per keypoint (target box, ``<``) matched without flip alignment, with it (the
pipeline's decision; when it flips, GeoAware-SC's renaming of left/right keypoints, as the
evaluation of flip-aligned presets does) and with the labels' decision (oracle), with the
keypoint counts.

    python benchmarks/flip_probe.py --dino-model ../shared/models/dinov2-small-imgfocus
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sdcorr.eval.common import read_json
from sdcorr.eval.flipids import on_image, predict_flipped, spair_partners
from sdcorr.eval.pairs import Pair
from sdcorr.eval.pck import Scoring
from sdcorr.eval.spair import load_spair
from sdcorr.flip import mirror_image

REPO = Path(__file__).resolve().parents[1]
SIDES = ("Left", "Right")


class Trial(NamedTuple):
    """One source/target combination: the pair to match and the decision the labels ask for."""

    label: str
    pair: Pair
    flip: bool


def _annotation(root: Path, category: str, image: Path) -> dict[str, Any]:
    return read_json(root / "ImageAnnotation" / category / f"{image.stem}.json")


def _trial_pair(name: str, a: dict, b: dict, a_img: Path, b_img: Path, mirrored: bool) -> Pair:
    """The pair A → B (or A → mirror(B)) with every keypoint whose truth is labelled."""
    w, h = int(b["image_width"]), int(b["image_height"])
    partners = spair_partners(a["category"]) if mirrored else {}
    ids, src, trg = [], [], []
    for k, xy in a["kps"].items():
        truth = b["kps"].get(partners.get(k, k))
        if xy is None or truth is None:
            continue
        ids.append(k)
        src.append(xy)
        trg.append([w - 1 - truth[0], truth[1]] if mirrored else truth)
    x1, y1, x2, y2 = (float(v) for v in b["bndbox"])
    box = (w - 1 - x2, y1, w - 1 - x1, y2) if mirrored else (x1, y1, x2, y2)
    return Pair(
        name=name, category=a["category"], src_image=a_img, trg_image=b_img,
        src_kps=np.asarray(src, dtype=np.float64).reshape(-1, 2),
        trg_kps=np.asarray(trg, dtype=np.float64).reshape(-1, 2), kps_ids=tuple(ids),
        src_size=(int(a["image_width"]), int(a["image_height"])), trg_size=(w, h),
        src_bbox=tuple(float(v) for v in a["bndbox"]), trg_bbox=box,
    )  # fmt: skip


def trials(root: Path, work: Path, both_ways: bool = True) -> list[Trial]:
    """Every trial of the Left/Right pairs under ``root`` (mirrors written into ``work``)."""
    out = []
    for p in load_spair(root, "test"):
        if p.src_pose not in SIDES or p.trg_pose not in SIDES:
            continue
        ends = [(p.src_image, p.trg_image, p.src_pose, p.trg_pose)]
        if both_ways:
            ends.append((p.trg_image, p.src_image, p.trg_pose, p.src_pose))
        for a_img, b_img, a_pose, b_pose in ends:
            a, b = (_annotation(root, p.category, i) for i in (a_img, b_img))
            mirror = work / f"{b_img.stem}-mirror.png"
            mirror_image(b_img).save(mirror)
            tag = f"{p.category} {a_img.stem}->{b_img.stem}"
            out.append(
                Trial(
                    f"{tag} ({a_pose}/{b_pose})",
                    _trial_pair(tag, a, b, a_img, b_img, False),
                    a_pose != b_pose,
                )
            )
            out.append(Trial(f"{tag}-mirror ({a_pose}/{'Left' if b_pose == 'Right' else 'Right'})",
                             _trial_pair(tag + "-mirror", a, b, a_img, mirror, True),
                             a_pose == b_pose))  # fmt: skip
    return out


def run_trial(pipe: Any, trial: Trial, alpha: float) -> dict[str, Any]:
    """The decision, its distances and the hits without, with and with the labels' flip."""
    p = trial.pair
    ra, rb = (pipe.image_features([i])[0] for i in (p.src_image, p.trg_image))
    rm = pipe.image_features([p.src_image], mirrored=True)[0]
    decision = pipe.flip_decision(p.src_image, p.trg_image)
    src = on_image(p.src_kps, p.src_size)
    plain = pipe.match_raw(ra, rb, src, flip_align=False).points_b.double().numpy()
    flipped = predict_flipped(pipe, ra, rb, rm, src, p.kps_ids, spair_partners(p.category),
                              p.src_size[0])  # fmt: skip
    score = Scoring("bbox", "lt")
    hits = {
        name: int(sum(score.hits(pred, p.trg_kps, p.trg_bbox, p.trg_size, (alpha,))[f"{alpha:g}"]))
        for name, pred in (("none", plain), ("flip", flipped if decision.flipped else plain),
                           ("oracle", flipped if trial.flip else plain))
    }  # fmt: skip
    return {"trial": trial.label, "right": trial.flip, "chosen": decision.flipped,
            "distance": decision.distance, "distance_flipped": decision.distance_flipped,
            "keypoints": p.num_kps, "hits": hits}  # fmt: skip


def report(rows: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """Print one line per trial and the totals; return the totals."""
    print(f"| trial | flip right | flip chosen | d(A) | d(mirror A) | kps | hits@{alpha:g}"
          " none / flip / oracle |\n|---|---|---|---:|---:|---:|---|")  # fmt: skip
    for r in rows:
        h = r["hits"]
        print(f"| {r['trial']} | {r['right']} | {r['chosen']} | {r['distance']:.4f} | "
              f"{r['distance_flipped']:.4f} | {r['keypoints']} | "
              f"{h['none']} / {h['flip']} / {h['oracle']} |")  # fmt: skip
    n = sum(r["keypoints"] for r in rows)
    total = {
        "trials": len(rows),
        "decisions_right": sum(r["right"] == r["chosen"] for r in rows),
        "keypoints": n,
        **{f"pck_{k}": 100 * sum(r["hits"][k] for r in rows) / n if n else None
           for k in ("none", "flip", "oracle")},
    }  # fmt: skip
    print(f"\ndecisions right: {total['decisions_right']} of {total['trials']}; PCK@{alpha:g} "
          f"per keypoint over {n} keypoints: {total['pck_none']:.1f} without flip alignment, "
          f"{total['pck_flip']:.1f} with it, {total['pck_oracle']:.1f} with the labels' "
          "decision")  # fmt: skip
    return total


def main(argv: Sequence[str] | None = None) -> int:
    """Run the probe; 0 on success."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(REPO / "tests" / "data" / "spair-mini" / "SPair-71k"))
    p.add_argument("--preset", default="dino")
    p.add_argument("--dino-model", default=None)
    p.add_argument("--sd-model", default=None)
    p.add_argument("--dino-frame", type=int, default=None, help="DINO frame (preset's: 840)")
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--one-way", action="store_true", help="only source -> target, not reversed")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the rows and totals here")
    args = p.parse_args(argv)
    import dataclasses

    from sdcorr.config import get_preset, with_models
    from sdcorr.pipeline import SDDino

    cfg = with_models(get_preset(args.preset), args.sd_model, args.dino_model)
    if args.dino_frame and cfg.dino is not None:
        cfg = dataclasses.replace(cfg, dino=dataclasses.replace(cfg.dino, frame=args.dino_frame))
    pipe = SDDino.from_pretrained(config=cfg, device=args.device, cache_size=16)
    with tempfile.TemporaryDirectory() as work:
        rows = [run_trial(pipe, t, args.alpha)
                for t in trials(Path(args.root), Path(work), not args.one_way)]  # fmt: skip
    total = report(rows, args.alpha)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "total": total}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
