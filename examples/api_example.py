"""Match the two bundled portraits through the Python API.

Usage:
    python examples/api_example.py               # real weights (downloaded once)
    python examples/api_example.py --tiny DIR    # tiny random-weight models written to DIR

Prints a few transferred points and writes ``api_swap.png`` and ``api_matches.png`` next to
the working directory (or under ``--out``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from sdcorr import viz
from sdcorr.pipeline import SDDino

HERE = Path(__file__).resolve().parent / "images"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", default=None, help="write tiny random-weight models here and use them")
    p.add_argument("--out", default=".", help="output folder")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    models = {}
    if args.tiny:
        from sdcorr.testing import save_tiny_models

        paths = save_tiny_models(args.tiny)
        models = {"dino_model": str(paths["dino"]), "sd_model": str(paths["sd"])}
    pipe = SDDino.from_pretrained("sd-dino", device=args.device, **models)

    a, b = Image.open(HERE / "astronaut.jpg"), Image.open(HERE / "grace_hopper.jpg")
    fa, fb = pipe.features(a, b, category="person")  # both images in one batch
    points = [[256.0, 180.0], [200.0, 250.0], [310.0, 250.0]]  # (x, y) in the astronaut image
    m = pipe.match_fused(fa, fb, points)
    for pa, pb, s in zip(m.points_a.tolist(), m.points_b.tolist(), m.scores.tolist(), strict=True):
        print(f"A ({pa[0]:6.1f}, {pa[1]:6.1f}) -> B ({pb[0]:6.1f}, {pb[1]:6.1f})  cos {s:.3f}")

    from sdcorr.match.dense import match_dense

    flow = match_dense(fa, fb, grid=None).to_pixels()  # (Hb, Wb, 2) positions in A
    out = Path(args.out)
    viz.save_png(viz.swap_image(np.asarray(a), np.asarray(b), flow.numpy()), out / "api_swap.png")
    viz.plot_matches(np.asarray(a), np.asarray(b), m, path=out / "api_matches.png")
    print(f"wrote {out / 'api_swap.png'} and {out / 'api_matches.png'}")


if __name__ == "__main__":
    main()
