"""Training data: an image folder, DINOv2 multi-crop augmentation, iBOT masks, collate.

Batches are a pure function of ``(seed, rank, step)``: the image order is a per-epoch
permutation of the files and every random draw of a batch uses RNGs seeded from those three
numbers (the global torch RNG is forked, never advanced). A resumed run therefore sees exactly
the batches the uninterrupted run would have seen, and every rank sees different images.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..errors import DatasetError
from .config import DataConfig
from .masking import batch_masks

log = logging.getLogger("sdcorr.pretrain")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def list_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursive, sorted); :class:`DatasetError` if none."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return files


def load_rgb(path: Path) -> torch.Tensor:
    """Read an image as ``(3, H, W)`` float32 in [0, 1]; raises ``OSError``/``ValueError``."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
        raise ValueError("empty image")
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255)


def crop_box(
    height: int, width: int, scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:  # fmt: skip
    """A RandomResizedCrop box ``(top, left, h, w)`` drawn with the global torch RNG.

    Area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``; up to 10 tries,
    then the largest centred box whose aspect ratio lies in ``ratio`` (the torchvision rule that
    DINOv2's ``RandomResizedCrop`` follows).
    """
    area = height * width
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(1).uniform_(lo, hi).item())
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,)).item())
            left = int(torch.randint(0, width - w + 1, (1,)).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(img: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """Crop ``(3, H, W)`` to ``box`` and resize to ``(3, size, size)``: bicubic with
    antialiasing (as PIL's bicubic resize that the DINOv2 code uses), clamped to [0, 1]."""
    top, left, h, w = box
    patch = img[None, :, top : top + h, left : left + w]
    out = F.interpolate(patch, size=(size, size), mode="bicubic", align_corners=False,
                        antialias=True)  # fmt: skip
    return out[0].clamp_(0, 1)


def random_resized_crops(img: torch.Tensor, n: int, size: int,
                         scale: tuple[float, float]) -> torch.Tensor:  # fmt: skip
    """``n`` independent antialiased RandomResizedCrops of ``(3, H, W)``: ``(n, 3, size, size)``."""
    h, w = img.shape[-2:]
    return torch.stack([resized_crop(img, crop_box(h, w, scale), size) for _ in range(n)])


class MultiCrop(nn.Module):
    """DINOv2 ``DataAugmentationDINO``: 2 global and ``n_local`` local crops.

    Geometry (RandomResizedCrop, bicubic with antialiasing as PIL's) is drawn per crop; flips,
    colour jitter, grayscale, blur and solarize (kornia) are drawn per crop on the stacked crops
    of a batch.
    """

    def __init__(self, cfg: DataConfig) -> None:
        super().__init__()
        import kornia.augmentation as K

        self.cfg = cfg

        def photometric(p_blur: float, p_solarize: float) -> nn.Sequential:
            ops = [
                K.RandomHorizontalFlip(p=cfg.hflip),
                K.ColorJitter(*cfg.jitter, p=cfg.p_jitter),
                K.RandomGrayscale(p=cfg.p_grayscale),
            ]
            if p_blur > 0:
                k = cfg.blur_kernel
                ops.append(K.RandomGaussianBlur((k, k), cfg.blur_sigma, p=p_blur))
            if p_solarize > 0:
                t = cfg.solarize_threshold
                ops.append(K.RandomSolarize(thresholds=(t, t), additions=0.0, p=p_solarize))
            ops.append(K.Normalize(torch.tensor(cfg.mean), torch.tensor(cfg.std)))
            return nn.Sequential(*ops)

        self.global1 = photometric(cfg.blur_probs[0], 0.0)
        self.global2 = photometric(cfg.blur_probs[1], cfg.p_solarize)
        self.local = photometric(cfg.blur_probs[2], 0.0)

    @torch.no_grad()
    def forward(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops of ``B`` images (each ``(3, H, W)`` in [0, 1]), crop-major.

        Returns:
            ``(2B, 3, G, G)`` global crops (all images' crop 0, then crop 1) and
            ``(n_local * B, 3, L, L)`` local crops, both normalised.
        """
        g, loc = [], []
        c = self.cfg
        for img in images:
            g.append(random_resized_crops(img, 2, c.global_size, c.global_scale))
            if c.n_local:
                loc.append(random_resized_crops(img, c.n_local, c.local_size, c.local_scale))
        g0 = self.global1(torch.stack([c[0] for c in g]))
        g1 = self.global2(torch.stack([c[1] for c in g]))
        s = self.cfg.local_size
        if loc:
            locs = torch.stack(loc, 1).flatten(0, 1)  # crop-major: (n_local * B, 3, L, L)
            local = self.local(locs)
        else:
            local = torch.zeros(0, 3, s, s)
        return torch.cat([g0, g1]), local


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def collate_masks(masks: np.ndarray) -> dict[str, torch.Tensor]:
    """The iBOT tensors of a ``(n_crops, N)`` bool mask array.

    Returns:
        ``masks (n_crops, N)`` bool, ``mask_indices (M,)`` long indices into the flattened
        ``(n_crops * N)`` patch tokens, ``mask_weights (M,)`` = 1 / (#masked in its crop),
        ``n_masked`` scalar long.
    """
    m = torch.from_numpy(masks).bool()
    per_crop = m.sum(1, keepdim=True).clamp(min=1).float()
    weights = (1.0 / per_crop).expand_as(m)[m]
    return {
        "masks": m,
        "mask_indices": m.flatten().nonzero().flatten(),
        "mask_weights": weights,
        "n_masked": m.sum(),
    }


class PretrainBatches(Dataset):
    """Map-style dataset whose item ``step`` is the collated batch of ``rank`` at ``step``.

    Corrupt or unreadable files are skipped with a warning (once per file) and reported in the
    batch's ``"corrupt"`` list; the next file of the epoch's order takes their place.

    Args:
        root: image folder (searched recursively).
        cfg: augmentation and masking settings.
        patch_size: backbone patch size (mask grid = ``global_size // patch_size``).
        batch_size: images per rank and step.
        seed, rank, world_size: define the batch content.
    """

    def __init__(
        self, root: str | Path, cfg: DataConfig, patch_size: int, batch_size: int,
        seed: int = 0, rank: int = 0, world_size: int = 1, num_steps: int = 1,
    ) -> None:  # fmt: skip
        self.files = list_images(root)
        self.cfg, self.batch_size, self.num_steps = cfg, batch_size, num_steps
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.grid = (cfg.global_size // patch_size,) * 2
        self.augment = MultiCrop(cfg)
        self.bad: set[int] = set()
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.num_steps

    def _file_index(self, sample: int) -> int:
        n = len(self.files)
        epoch, pos = divmod(sample, n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
        return int(self._perm[1][pos])

    def _load(self, sample: int, corrupt: list[str]) -> torch.Tensor:
        for offset in range(len(self.files)):
            idx = self._file_index(sample + offset)
            if idx in self.bad:
                continue
            try:
                return load_rgb(self.files[idx])
            except (OSError, ValueError, SyntaxError) as err:
                self.bad.add(idx)
                corrupt.append(str(self.files[idx]))
                log.warning("skipping unreadable image %s (%s)", self.files[idx], err)
        raise DatasetError(f"no readable image among {len(self.files)} files")

    def __getitem__(self, step: int) -> dict[str, Any]:
        first = (step * self.world_size + self.rank) * self.batch_size
        corrupt: list[str] = []
        images = [self._load(first + i, corrupt) for i in range(self.batch_size)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(
                int(np.random.SeedSequence([self.seed, self.rank, step]).generate_state(1)[0])
            )
            with _single_thread():  # small kornia ops: thread wake-ups cost more than they save
                global_crops, local_crops = self.augment(images)
        rng = np.random.default_rng([self.seed, self.rank, step, 1])
        c = self.cfg
        masks = batch_masks(2 * self.batch_size, self.grid, rng, c.mask_ratio,
                            c.mask_probability, c.mask_min_patches, c.mask_max_aspect)  # fmt: skip
        return {"global_crops": global_crops, "local_crops": local_crops, "step": step,
                "corrupt": corrupt, **collate_masks(masks)}  # fmt: skip
