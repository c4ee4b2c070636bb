"""Fixtures of the pretraining tests: a small image folder with one corrupt file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_images(root: Path, n: int = 6, seed: int = 0) -> Path:
    """``n`` random-size noisy images in ``root`` and ``root/sub`` plus one corrupt file."""
    rng = np.random.default_rng(seed)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = 60 + 10 * i, 80 + 7 * i
        yy, xx = np.mgrid[:h, :w]
        base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], -1) * 200
        img = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        folder = root / "sub" if i % 2 else root
        Image.fromarray(img).save(folder / f"img{i}.{'png' if i % 3 else 'jpg'}")
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    return root


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 6 images (2 levels) and 1 corrupt ``.jpg``."""
    return make_images(tmp_path_factory.mktemp("pretrain-images"))
