"""Multi-crop data: collate shapes, corrupt files skipped and counted, determinism per step."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sdcorr.errors import DatasetError
from sdcorr.pretrain.config import PRESETS
from sdcorr.pretrain.data import PretrainBatches, crop_box, list_images, resized_crop


def _ds(image_dir, **kw) -> PretrainBatches:
    cfg = replace(PRESETS["tiny"].data, n_local=3)
    return PretrainBatches(image_dir, cfg, patch_size=14, batch_size=4, num_steps=10, **kw)


def test_collate_shapes(image_dir) -> None:
    b = _ds(image_dir)[0]
    assert b["global_crops"].shape == (8, 3, 56, 56)
    assert b["local_crops"].shape == (12, 3, 28, 28)
    assert b["masks"].shape == (8, 16) and b["masks"].dtype == torch.bool
    assert b["masks"].any(1).sum() == 4  # probability 0.5 of 2B crops
    assert b["mask_indices"].shape == b["mask_weights"].shape == (int(b["n_masked"]),)
    assert torch.isfinite(b["global_crops"]).all()
    # normalised: roughly zero-mean unit-scale
    assert -2.5 < b["global_crops"].mean() < 2.5 and b["global_crops"].std() > 0.1


def test_corrupt_file_skipped_and_reported(image_dir, caplog) -> None:
    ds = _ds(image_dir)
    assert len(ds.files) == 7
    corrupt = [c for step in range(4) for c in ds[step]["corrupt"]]
    assert corrupt == [str(image_dir / "broken.jpg")]  # once, with a warning
    assert "skipping unreadable image" in caplog.text


def test_batches_are_a_function_of_step_and_rank(image_dir) -> None:
    a, b = _ds(image_dir), _ds(image_dir)
    x, y = a[3], b[3]
    assert torch.equal(x["global_crops"], y["global_crops"])
    assert torch.equal(x["masks"], y["masks"])
    assert not torch.equal(a[3]["global_crops"], a[4]["global_crops"])
    other = _ds(image_dir, rank=1, world_size=2)[3]
    assert not torch.equal(x["global_crops"], other["global_crops"])
    state = torch.get_rng_state()
    a[5]
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never advanced


def test_empty_or_missing_folder(tmp_path) -> None:
    with pytest.raises(DatasetError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        list_images(tmp_path / "nope")
    (tmp_path / "bad.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="no readable image"):
        _ds(tmp_path)[0]


def test_crops_are_antialiased_like_pil_bicubic() -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)  # white noise: aliases badly
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    ours = resized_crop(x, (0, 0, 90, 120), 28)
    pil = Image.fromarray(img).resize((28, 28), Image.Resampling.BICUBIC)
    ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255
    assert (ours - ref).abs().mean() < 0.01
    # without antialiasing the downsampled noise keeps its full contrast
    plain = torch.nn.functional.interpolate(x[None], size=(28, 28), mode="bicubic")[0]
    assert ours.std() < 0.5 * plain.std()


def test_crop_box_follows_scale_and_ratio() -> None:
    torch.manual_seed(0)
    for _ in range(50):
        top, left, h, w = crop_box(100, 150, (0.2, 0.5))
        assert top >= 0 and top + h <= 100 and left >= 0 and left + w <= 150
        assert 0.19 <= h * w / 15000 <= 0.51 and 0.74 <= w / h <= 1.35
    assert crop_box(10, 100, (0.9, 1.0)) == (0, 43, 10, 13)  # fallback: centred, ratio 4/3
