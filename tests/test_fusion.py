"""Co-PCA and fusion."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sdcorr.config import FusionConfig
from sdcorr.fusion import co_pca, fuse_pair, joint_pca, stack_layers
from sdcorr.image import Geometry
from sdcorr.types import FeatureMap


def _svd_reference(a: np.ndarray, b: np.ndarray, d: int) -> np.ndarray:
    x = np.concatenate([a, b]).astype(np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt[:d]
    axes = axes * np.sign(axes[np.arange(d), np.abs(axes).argmax(1)])[:, None]
    return x @ axes.T


def test_co_pca_matches_explicit_svd_on_hand_made_matrix() -> None:
    # 3 tokens per image, 4 channels, a dominant direction plus smaller ones
    a = np.array([[3.0, 0.1, 0.0, 1.0], [-2.0, 0.0, 0.2, 0.5], [1.0, 0.3, 0.0, -1.0]])
    b = np.array([[0.5, -0.2, 0.1, 0.0], [-1.5, 0.1, -0.1, 0.3], [2.5, 0.0, 0.4, 0.2]])
    pa, pb, axes = co_pca(torch.tensor(a), torch.tensor(b), 2)
    ref = _svd_reference(a, b, 2)
    assert np.allclose(torch.cat([pa, pb]).numpy(), ref, atol=1e-6)
    assert axes.shape == (2, 4)
    assert torch.allclose(axes @ axes.t(), torch.eye(2), atol=1e-6)


def test_co_pca_wide_case_and_batch() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(2, 5, 12, generator=g),
        torch.randn(2, 4, 12, generator=g),
    )  # 9 tokens < 12 ch
    pa, pb, _ = co_pca(a, b, 6)
    for p in range(2):
        ref = _svd_reference(a[p].numpy(), b[p].numpy(), 6)
        assert np.allclose(torch.cat([pa[p], pb[p]]).numpy(), ref, atol=1e-5)


def test_co_pca_is_joint_not_per_image() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(50, 8, generator=g) * torch.tensor([5.0, 1, 1, 1, 1, 1, 1, 1])
    b = torch.randn(50, 8, generator=g) * torch.tensor([1.0, 9, 1, 1, 1, 1, 1, 1])
    pa, pb, axes = co_pca(a, b, 3)
    # one basis for both: projecting each centred set on the shared axes reproduces the output
    mean = torch.cat([a, b]).mean(0)
    assert torch.allclose(pa, (a - mean) @ axes.t(), atol=1e-4)
    assert torch.allclose(pb, (b - mean) @ axes.t(), atol=1e-4)
    # fitted on A alone the first axis is A's dominant channel 0; jointly it is B's channel 1
    _, _, solo = co_pca(a[:25], a[25:], 1)
    assert solo[0, 0].abs() > 0.9 and axes[0, 1].abs() > 0.9


def test_joint_pca_of_several_sets_is_one_fit_and_co_pca_is_its_two_set_case() -> None:
    g = torch.Generator().manual_seed(2)
    sets = [torch.randn(n, 7, generator=g) * torch.arange(1.0, 8.0) for n in (4, 9, 6)]
    projs, axes = joint_pca(sets, 3)
    assert [p.shape for p in projs] == [(4, 3), (9, 3), (6, 3)] and axes.dtype == torch.float64
    ref = _svd_reference(torch.cat(sets[:2]).numpy(), sets[2].numpy(), 3)
    assert np.allclose(torch.cat(projs).numpy(), ref, atol=1e-9)
    pa, pb, ax = co_pca(sets[0], sets[1], 3)
    (qa, qb), ax2 = joint_pca(sets[:2], 3)
    assert (
        torch.equal(pa, qa.float()) and torch.equal(pb, qb.float()) and torch.equal(ax, ax2.float())
    )


def test_stack_layers_cascade_order_and_weights() -> None:
    cfg = FusionConfig(pca_dims=None, layer_weights=(1.0, 2.0, 3.0))
    maps = {
        "s3": torch.ones(1, 2, 8, 8),
        "s4": torch.ones(1, 3, 4, 4),
        "s5": torch.ones(1, 4, 2, 2),
    }
    out = stack_layers(maps, cfg, (8, 8))
    assert out.shape == (1, 9, 8, 8)
    assert torch.allclose(out[0, :2], torch.ones(2, 8, 8))
    assert torch.allclose(out[0, 2:5], torch.full((3, 8, 8), 2.0))
    assert torch.allclose(out[0, 5:], torch.full((4, 8, 8), 3.0))
    # s5 goes through the s4 grid first, as the reference does
    s5 = torch.arange(4.0).view(1, 1, 2, 2)
    ref = F.interpolate(F.interpolate(s5, (4, 4), mode="bilinear"), (8, 8), mode="bilinear")
    cfg1 = FusionConfig(pca_dims=None)
    got = stack_layers(
        {"s3": torch.zeros(1, 1, 8, 8), "s4": torch.zeros(1, 1, 4, 4), "s5": s5}, cfg1, (8, 8)
    )
    assert torch.allclose(got[0, 2], ref[0, 0])


def _fm(c: int, n: int, stride: int, seed: int) -> FeatureMap:
    g = torch.Generator().manual_seed(seed)
    return FeatureMap(
        torch.randn(1, c, n, n, generator=g), (Geometry(224, 224, n * stride, stride),)
    )


def test_fuse_pair_normalises_branches_and_weights() -> None:
    sd_a = {"s3": _fm(6, 8, 16, 0), "s4": _fm(7, 4, 32, 1), "s5": _fm(9, 2, 64, 2)}
    sd_b = {"s3": _fm(6, 8, 16, 3), "s4": _fm(7, 4, 32, 4), "s5": _fm(9, 2, 64, 5)}
    da, db = _fm(5, 8, 14, 6), _fm(5, 8, 14, 7)
    cfg = FusionConfig(pca_dims=4, sd_weight=0.3, dino_weight=0.7)
    fa, fb = fuse_pair(sd_a, sd_b, da, db, cfg)
    assert fa.features.shape == (1, 12 + 5, 8, 8)
    assert fa.geometry == da.geometry and fb.geometry == db.geometry
    sd_norm = fa.features[0, :12].norm(dim=0)
    dino_norm = fa.features[0, 12:].norm(dim=0)
    assert torch.allclose(sd_norm, torch.full_like(sd_norm, 0.3), atol=1e-5)
    assert torch.allclose(dino_norm, torch.full_like(dino_norm, 0.7), atol=1e-5)
    # DINO-only and SD-only fusion
    fa_d, _ = fuse_pair(None, None, da, db, FusionConfig(sd_weight=0, dino_weight=1))
    assert torch.allclose(fa_d.features, F.normalize(da.features, dim=1))
    fa_s, _ = fuse_pair(sd_a, sd_b, None, None, cfg)
    assert fa_s.features.shape[-1] == 8 and fa_s.geometry == sd_a["s3"].geometry
