"""``benchmarks/pretrain_probe.py``: warp ground truth (oracle features), JSON rows, SPair PCK."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "pretrain_probe.py"


def _probe():
    spec = importlib.util.spec_from_file_location("pretrain_probe", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class PositionOracle(torch.nn.Module):
    """Patch tokens = an RBF code of each patch's mean (red, green): on images whose red and
    green channels encode x and y, nearest neighbours recover the true source position."""

    def __init__(self, patch: int = 14) -> None:
        super().__init__()
        self.config = SimpleNamespace(patch_size=patch, num_register_tokens=0)
        c = torch.linspace(0, 1, 24)
        self.centres = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)

    def forward(self, pixel_values: torch.Tensor):
        mean = torch.tensor([0.485, 0.456]).view(1, 2, 1, 1)
        std = torch.tensor([0.229, 0.224]).view(1, 2, 1, 1)
        rg = pixel_values[:, :2] * std + mean  # undo the probe's normalisation
        p = self.config.patch_size
        cells = torch.nn.functional.avg_pool2d(rg, p).flatten(2).transpose(1, 2)  # (B, N, 2)
        code = torch.exp(-((cells[:, :, None] - self.centres) ** 2).sum(-1) / 0.002)
        tokens = torch.cat([torch.zeros_like(code[:, :1]), code], 1)
        return SimpleNamespace(last_hidden_state=tokens)


def _ramps(n: int, size: int) -> torch.Tensor:
    """``n`` images whose red channel is x / size and green channel is y / size."""
    x = (torch.arange(size) + 0.5) / size
    img = torch.stack([x.expand(size, size), x[:, None].expand(size, size),
                       torch.full((size, size), 0.5)])  # fmt: skip
    return img.expand(n, -1, -1, -1).clone()


def test_warp_ground_truth_gives_an_oracle_full_marks() -> None:
    probe = _probe()
    images = _ramps(2, 112)
    acc = probe.warp_probe(PositionOracle(), images, alpha=0.1)
    assert acc["zoom"] == 1.0 and acc["flip"] == 1.0
    # the same oracle with a wrong ground truth (identity instead of the mirror) fails
    centres = probe.cell_centres(8, 14)
    feats = probe.patch_features(PositionOracle(), images)
    flipped = probe.patch_features(PositionOracle(), probe.flip(images))
    wrong = probe.nn_hits(feats, flipped, centres, centres, 11.2).float().mean()
    assert wrong < 0.3


def test_warp_maps() -> None:
    probe = _probe()
    p = torch.tensor([[0.0, 0.0], [112.0, 56.0]])
    assert torch.equal(probe.flip_source(p, 112), torch.tensor([[112.0, 0.0], [0.0, 56.0]]))
    z = probe.zoom_source(p, 112)  # the central 60 %: 22 .. 90 for 112 px
    assert torch.allclose(z, torch.tensor([[22.0, 22.0], [90.0, 56.0]]))
    img = torch.rand(1, 3, 28, 28)
    assert probe.colour(img).shape == img.shape and not torch.equal(probe.colour(img), img)


def _photos(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(3):
        yy, xx = np.mgrid[:70, :90]
        img = np.stack([xx / 90, yy / 70, (xx * yy) % 17 / 17], -1) * 255
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"p{i}.jpg")
    return folder


def test_random_init_row(tmp_path: Path) -> None:
    from sdcorr.pretrain.config import get_preset, save_yaml

    probe = _probe()
    cfg = save_yaml(get_preset("tiny"), tmp_path / "config.yaml")
    out = tmp_path / "probe.json"
    argv = ["--random-init", str(cfg), "--images", str(_photos(tmp_path / "photos")),
            "--size", "56", "--json", str(out)]  # fmt: skip
    assert probe.main(argv) == 0
    row = json.loads(out.read_text())
    acc = row["warp_nn_accuracy"]
    assert set(acc) == {"zoom", "flip", "colour", "all", "mean"}
    assert all(0 <= v <= 1 for v in acc.values())
    assert math.isclose(acc["mean"], sum(acc[k] for k in ("zoom", "flip", "colour", "all")) / 4)
    assert row["n_images"] == 3 and row["size"] == 56 and "spair" not in row
    assert probe.main(["--backbone", str(tmp_path / "nope"), "--json", str(out)]) == 2


def _with_self_pairs(root: Path, folder: Path) -> Path:
    """A copy of the SPair fixture whose even-numbered test pairs match the source with itself
    (random weights still find most of those keypoints, so the PCK is neither 0 nor 100)."""
    import shutil

    copy = folder / "SPair-71k"
    shutil.copytree(root, copy)
    for i, f in enumerate(sorted((copy / "PairAnnotation" / "test").glob("*.json"))):
        if i % 2 == 0:
            ann = json.loads(f.read_text())
            for key in ("imname", "imsize", "bndbox", "kps"):
                ann[f"trg_{key}"] = ann[f"src_{key}"]
            f.write_text(json.dumps(ann))
    return copy


def _pck_by_hand(backbone: Path, root: Path, frame: int) -> tuple[float, float]:
    """(per image, per keypoint) PCK@0.1 in %, bbox threshold, of the ``dino`` preset: each
    pair matched on its own through ``SDDino.match_points`` and scored from the definitions."""
    import dataclasses

    from sdcorr.config import get_preset, with_models
    from sdcorr.eval.spair import load_spair
    from sdcorr.pipeline import SDDino

    cfg = with_models(get_preset("dino"), None, str(backbone))
    cfg = dataclasses.replace(cfg, dino=dataclasses.replace(cfg.dino, frame=frame))
    pipe = SDDino.from_pretrained(config=cfg, device="cpu")
    hits = []
    for p in load_spair(root, "test"):
        w, h = p.src_size[:2]
        src = np.clip(np.asarray(p.src_kps, float), 0, [w - 1, h - 1])  # as the runner does
        pred = pipe.match_points(p.src_image, p.trg_image, src).points_b.double().numpy()
        x1, y1, x2, y2 = p.trg_bbox
        hits.append(np.linalg.norm(pred - p.trg_kps, axis=1) < 0.1 * max(x2 - x1, y2 - y1))
    return 100 * float(np.mean([h.mean() for h in hits])), 100 * float(np.concatenate(hits).mean())


def test_spair_pck_row(tmp_path: Path, tiny_models, spair_root: Path) -> None:
    probe = _probe()
    root = _with_self_pairs(spair_root, tmp_path)
    out = tmp_path / "probe.json"
    argv = ["--backbone", str(tiny_models["dino"]), "--spair-root", str(root),
            "--dino-frame", "112", "--size", "56", "--json", str(out)]  # fmt: skip
    assert probe.main(argv) == 0
    spair = json.loads(out.read_text())["spair"]
    assert spair["n_pairs"] == 6 and spair["dino_frame"] == 112
    per_image, per_keypoint = _pck_by_hand(tiny_models["dino"], root, 112)
    assert 0 < per_keypoint < 100 and abs(per_image - per_keypoint) > 0.5
    assert spair["pck@0.1_per_image"] == pytest.approx(per_image, abs=1e-6)
    assert spair["pck@0.1_per_keypoint"] == pytest.approx(per_keypoint, abs=1e-6)


@pytest.mark.realweights
@pytest.mark.slow
def test_real_weights_beat_random_init(dinov2_small: Path) -> None:
    from transformers import Dinov2Config, Dinov2Model

    probe = _probe()
    images = probe.load_images(probe.DEFAULT_IMAGES, 112)[:4]
    real = probe.warp_probe(probe.load_backbone(dinov2_small), images)
    torch.manual_seed(0)
    random = Dinov2Model(Dinov2Config.from_pretrained(dinov2_small)).eval()
    assert real["mean"] > probe.warp_probe(random, images)["mean"] + 0.05  # measured: 0.36 vs 0.28
