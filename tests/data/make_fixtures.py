"""Build the small PF-Pascal, PF-Willow, AP-10K and TSS fixtures from the spair-mini photos.

Run from the repository root (``python tests/data/make_fixtures.py``); the outputs are committed,
so tests never run this. Photos are the 12 real SPair-71k test JPEGs of ``spair-mini``, shrunk
(longest side 160 px, TSS 64 px) to keep the repository small; keypoints are the SPair
annotations scaled by the same factor. Each fixture is in its dataset's own file format:

* ``pf-pascal-mini/``: as after sd-dino's ``data/prepare_pfpascal.sh``:
  ``PF-dataset-PASCAL/JPEGImages/`` with ``PF-dataset-PASCAL/test_pairs_pf_pascal.csv`` moved in
  (its image paths ``PF-dataset-PASCAL/JPEGImages/...`` are relative to the list's parent).
* ``pf-willow-mini/``: as the CNNGeometric/NCNet download leaves it: ``test_pairs_pf.csv`` (10
  points per image: the SPair points, then midpoints of consecutive ones) beside
  ``PF-dataset/<class>/*.png``, filed under PF-Willow's real class names (the photos are not of
  those objects; the readers do not look).
* ``ap10k-mini/``: GeoAware-SC's prepared layout (``ImageAnnotation``, ``JPEGImages``,
  ``PairAnnotation/{test,test_cross_species,test_cross_family}``). The second dog photo is filed
  as species ``fox`` so that a cross-species pair exists; keypoint slot 16 is labelled in the
  source only (it must not be scored).
* ``tss-mini/TSS_CVPR2016/``: per folder ``image1.png``, ``image2.png``, ``flow{1,2}.flo``,
  ``mask{1,2}.png``. ``image2`` is ``image1`` mirrored (``mirror`` folders) or shifted right by
  8 px on a wider canvas (``shift`` folders), so the true flow is exact.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
SPAIR = HERE / "spair-mini" / "SPair-71k"
sys.path.insert(0, str(HERE.parents[1]))

from sdcorr.eval.tss import write_flo  # noqa: E402


def spair_pairs() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((SPAIR / "PairAnnotation/test").glob("*"))]


def shrink(src: Path, dst: Path, side: int) -> float:
    """Save ``src`` with its longest side ``side``; return the scale factor."""
    im = Image.open(src).convert("RGB")
    s = side / max(im.size)
    small = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BICUBIC)
    dst.parent.mkdir(parents=True, exist_ok=True)
    small.save(dst, quality=85) if dst.suffix == ".jpg" else small.save(dst)
    return small.size[0] / im.size[0], small.size[1] / im.size[1]


def scaled(kps: list, s: tuple[float, float]) -> np.ndarray:
    return np.round(np.asarray(kps, dtype=np.float64) * np.array(s), 2)


def fmt(v: np.ndarray) -> str:
    return ";".join(f"{x:g}" for x in v)


def pf_pascal(out: Path) -> None:
    classes = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor"]  # fmt: skip
    rows = [["source_image", "target_image", "class", "XA", "YA", "XB", "YB"]]
    for d in spair_pairs():
        cat = d["category"]
        rel = [f"PF-dataset-PASCAL/JPEGImages/{d[k]}" for k in ("src_imname", "trg_imname")]
        sa = shrink(SPAIR / "JPEGImages" / cat / d["src_imname"], out / rel[0], 160)
        sb = shrink(SPAIR / "JPEGImages" / cat / d["trg_imname"], out / rel[1], 160)
        a, b = scaled(d["src_kps"], sa), scaled(d["trg_kps"], sb)
        rows.append([*rel, str(classes.index(cat) + 1), fmt(a[:, 0]), fmt(a[:, 1]),
                     fmt(b[:, 0]), fmt(b[:, 1])])  # fmt: skip
    with open(out / "PF-dataset-PASCAL" / "test_pairs_pf_pascal.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def ten(kps: np.ndarray) -> np.ndarray:
    """The points, then midpoints of consecutive points, until there are 10."""
    pts = list(kps)
    i = 0
    while len(pts) < 10:
        pts.append((kps[i % len(kps)] + kps[(i + 1) % len(kps)]) / 2)
        i += 1
    return np.round(np.asarray(pts[:10]), 2)


def pf_willow(out: Path) -> None:
    names = {"aeroplane": "car(G)", "cow": "car(M)", "dog": "duck(S)", "horse": "motorbike(M)",
             "motorbike": "motorbike(G)", "pottedplant": "winebottle(wC)"}  # fmt: skip
    head = ["imageA", "imageB"] + [
        f"{c}{i}" for c in ("XA", "YA", "XB", "YB") for i in range(1, 11)
    ]
    rows = [head]
    for d in spair_pairs():
        cat = names[d["category"]]
        rel = [f"PF-dataset/{cat}/{d[k][:-4]}.png" for k in ("src_imname", "trg_imname")]
        sa = shrink(SPAIR / "JPEGImages" / d["category"] / d["src_imname"], out / rel[0], 160)
        sb = shrink(SPAIR / "JPEGImages" / d["category"] / d["trg_imname"], out / rel[1], 160)
        a, b = ten(scaled(d["src_kps"], sa)), ten(scaled(d["trg_kps"], sb))
        rows.append(rel + [f"{v:g}" for v in (*a[:, 0], *a[:, 1], *b[:, 0], *b[:, 1])])
    with open(out / "test_pairs_pf.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def ap10k(out: Path) -> None:
    by_cat = {d["category"]: d for d in spair_pairs()}
    files = {}  # spair image -> (family, species)
    place = {("cow", 0): ("Bovidae", "cow"), ("cow", 1): ("Bovidae", "cow"),
             ("horse", 0): ("Equidae", "horse"), ("horse", 1): ("Equidae", "horse"),
             ("dog", 0): ("Canidae", "dog"), ("dog", 1): ("Canidae", "fox")}  # fmt: skip
    for (cat, i), (fam, sp) in place.items():
        d = by_cat[cat]
        side = "src" if i == 0 else "trg"
        name = d[f"{side}_imname"][:-4]
        s = shrink(SPAIR / "JPEGImages" / cat / f"{name}.jpg",
                   out / "JPEGImages" / fam / sp / f"{name}.jpg", 160)  # fmt: skip
        kps = np.zeros((17, 3))
        pts = scaled(d[f"{side}_kps"], s)
        kps[: len(pts), :2], kps[: len(pts), 2] = pts, 2
        if i == 0:
            kps[16] = [5.0, 6.0, 2]  # labelled in the source only
        x1, y1, x2, y2 = np.asarray(d[f"{side}_bndbox"], dtype=float) * np.array([*s, *s])
        w, h = Image.open(out / "JPEGImages" / fam / sp / f"{name}.jpg").size
        ann = {"image_id": name, "width": w, "height": h, "category_id": 1,
               "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
               "keypoints": [round(float(v), 2) for v in kps.reshape(-1)]}  # fmt: skip
        path = out / "ImageAnnotation" / fam / sp / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ann))
        files[(cat, i)] = f"data/ap-10k/ImageAnnotation/{fam}/{sp}/{name}.json"
    pairs = {"test": [("cow", "cow"), ("horse", "horse")],
             "test_cross_species": [("dog", "Canidae")],
             "test_cross_family": [("cow", "all")]}  # fmt: skip
    for split, items in pairs.items():
        for cat, label in items:
            src = files[(cat, 0)]
            trg = files[("horse", 1)] if label == "all" else files[(cat, 1)]
            name = f"{Path(src).stem}-{Path(trg).stem}:{label}.json"
            path = out / "PairAnnotation" / split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"src_json_path": src, "trg_json_path": trg}, indent=4))


def tss(out: Path) -> None:
    by_cat = {d["category"]: d for d in spair_pairs()}
    folders = {"FG3DCar/car_mirror": "motorbike", "JODS/horse_shift": "horse",
               "PASCAL/plane_mirror": "aeroplane", "PASCAL/busd_shift": "cow"}  # fmt: skip
    for rel, cat in folders.items():
        d = by_cat[cat]
        folder = out / rel
        s = shrink(SPAIR / "JPEGImages" / cat / d["src_imname"], folder / "image1.png", 64)
        im1 = Image.open(folder / "image1.png")
        w, h = im1.size
        x1, y1, x2, y2 = (round(float(v)) for v in np.asarray(d["src_bndbox"]) * np.array([*s, *s]))
        box = np.zeros((h, w), bool)
        box[max(y1, 0) : min(y2, h), max(x1, 0) : min(x2, w)] = True
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        if rel.endswith("mirror"):
            ImageOps.mirror(im1).save(folder / "image2.png")
            flow = np.stack([w - 1 - 2 * xs, np.zeros_like(ys)], axis=-1)  # both directions
            mask1, mask2 = box, box[:, ::-1]
            flow1, flow2 = flow, flow
        else:
            shift = 8
            canvas = Image.new("RGB", (w + shift, h))
            canvas.paste(im1, (shift, 0))
            canvas.save(folder / "image2.png")
            flow1 = np.stack([np.full_like(xs, shift), np.zeros_like(ys)], axis=-1)  # 1 -> 2
            ys2, xs2 = np.mgrid[0:h, 0 : w + shift].astype(np.float32)
            flow2 = np.stack([np.full_like(xs2, -shift), np.zeros_like(ys2)], axis=-1)
            mask1 = box
            mask2 = np.zeros((h, w + shift), bool)
            mask2[:, shift:] = box
        for n, (flow, mask) in enumerate(((flow1, mask1), (flow2, mask2)), 1):
            write_flo(folder / f"flow{n}.flo", flow)
            Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(folder / f"mask{n}.png")


def main() -> None:
    for name, build in (("pf-pascal-mini", pf_pascal), ("pf-willow-mini", pf_willow),
                        ("ap10k-mini", ap10k), ("tss-mini/TSS_CVPR2016", tss)):  # fmt: skip
        out = HERE / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        build(out)
        print("wrote", out)


if __name__ == "__main__":
    main()
