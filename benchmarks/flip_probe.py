"""Does flip alignment help across instances? A against the mirror of another instance.

For each SPair pair (source A, target T), B = mirror(T) and the ground truth is T's keypoints
mirrored; the right flip decision is always "flipped". Prints, per pair and in all, how often the
mirror was chosen and PCK@alpha per keypoint (target-box threshold, ``<``) with and without
flip alignment.

    python benchmarks/flip_probe.py --dino-model ../shared/models/dinov2-small-imgfocus
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from sdcorr.eval.spair import load_spair
from sdcorr.flip import mirror_image, mirror_points
from sdcorr.pipeline import SDDino

REPO = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(REPO / "tests" / "data" / "spair-mini" / "SPair-71k"))
    p.add_argument("--preset", default="dino")
    p.add_argument("--dino-model", default=None)
    p.add_argument("--sd-model", default=None)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    pipe = SDDino.from_pretrained(
        args.preset, dino_model=args.dino_model, sd_model=args.sd_model, device=args.device
    )
    hits = {True: 0, False: 0}
    flips = n = 0
    pairs = load_spair(Path(args.root), "test")
    for pair in pairs:
        src = Image.open(pair.src_image).convert("RGB")
        trg = Image.open(pair.trg_image).convert("RGB")
        kps = torch.as_tensor(pair.src_kps, dtype=torch.float64)
        kps = torch.stack(
            [kps[:, 0].clamp(0, src.width - 1), kps[:, 1].clamp(0, src.height - 1)], 1
        )
        truth = mirror_points(torch.as_tensor(pair.trg_kps, dtype=torch.float64), trg.width)
        x1, y1, x2, y2 = pair.trg_bbox
        limit = args.alpha * max(x2 - x1, y2 - y1)
        for flip in (True, False):
            m = pipe.match_points(src, mirror_image(trg), kps, flip_align=flip)
            hits[flip] += int(((m.points_b.double() - truth).norm(dim=1) < limit).sum())
            flips += int(flip and m.flipped)
        n += len(kps)
        print(f"{pair.name}: mirror chosen so far {flips}, hits {hits}, keypoints {n}")
    print(
        f"mirror chosen in {flips} of {len(pairs)} pairs; PCK@{args.alpha} per keypoint "
        f"{100 * hits[True] / n:.1f} with flip alignment, {100 * hits[False] / n:.1f} without"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
