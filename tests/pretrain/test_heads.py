"""Backbone config, DINO head, iBOT masking through ``bool_masked_pos``."""

from __future__ import annotations

from dataclasses import replace

import torch

from sdcorr.pretrain.config import PRESETS
from sdcorr.pretrain.heads import DINOHead, SSLModel, backbone_config


def test_backbone_config_is_explicit() -> None:
    cfg = PRESETS["vitb14"].model
    c = backbone_config(cfg)
    assert (c.hidden_size, c.num_hidden_layers, c.patch_size) == (768, 12, 14)
    assert c.layerscale_value == 1e-5 and c.drop_path_rate == 0.3 and c.layer_norm_eps == 1e-6
    assert backbone_config(cfg, drop_path=0.0).drop_path_rate == 0.0
    reg = backbone_config(replace(cfg, num_register_tokens=4))
    assert reg.model_type == "dinov2_with_registers" and reg.num_register_tokens == 4


def test_dino_head_shapes_and_weight_norm() -> None:
    head = DINOHead(32, 100, hidden_dim=64, bottleneck_dim=16)
    out = head(torch.randn(5, 32))
    assert out.shape == (5, 100)
    g = head.last_layer.parametrizations.weight.original0
    assert g.requires_grad and torch.all(g == 1)
    # weight-normed rows with g = 1 on an L2-normalised input: |logit| <= 1
    assert out.abs().max() <= 1 + 1e-5


def test_masking_changes_only_masked_images() -> None:
    torch.manual_seed(0)
    model = SSLModel(PRESETS["tiny"].model).eval()
    with torch.no_grad():
        model.backbone.embeddings.mask_token.normal_()
    x = torch.randn(2, 3, 56, 56)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[1, 3:7] = True
    with torch.no_grad():
        cls0, p0 = model.tokens(x)
        cls1, p1 = model.tokens(x, masks)
    assert torch.equal(cls0[0], cls1[0]) and torch.equal(p0[0], p1[0])
    assert not torch.allclose(p0[1], p1[1])


def test_student_forward_outputs_and_registers() -> None:
    cfg = replace(PRESETS["tiny"].model, num_register_tokens=2, ibot_separate_head=True,
                  head_prototypes=128, ibot_prototypes=50)  # fmt: skip
    model = SSLModel(cfg)
    masks = torch.zeros(4, 16, dtype=torch.bool)
    masks[0, :5] = True
    idx = masks.flatten().nonzero().flatten()
    out = model(torch.randn(4, 3, 56, 56), torch.randn(6, 3, 28, 28), masks, idx)
    assert out["global_cls"].shape == (4, 32)
    assert out["global_logits"].shape == (4, 128) and out["local_logits"].shape == (6, 128)
    assert out["patch_logits"].shape == (5, 50)
    cls, patch = model.teacher_forward(torch.randn(4, 3, 56, 56), idx)
    assert cls.shape == (4, 128) and patch.shape == (5, 50)
