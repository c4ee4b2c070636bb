"""Schedules at warm-up end and final step; parameter-group multipliers by name."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from sdcorr.pretrain.config import PRESETS
from sdcorr.pretrain.heads import SSLModel
from sdcorr.pretrain.schedules import (
    build_schedules,
    cosine_schedule,
    param_groups,
    peak_lr,
    teacher_temp_schedule,
)  # fmt: skip


def test_cosine_schedule_endpoints() -> None:
    s = cosine_schedule(1.0, 0.1, total=100, warmup=10)
    assert len(s) == 100
    assert s[0] == 0.0 and s[5] == pytest.approx(0.5)
    assert s[10] == pytest.approx(1.0)  # warm-up end: base value
    assert s[-1] == pytest.approx(0.1)  # final step: final value
    mid = 10 + 45
    assert s[mid] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 45 / 89)))
    frozen = cosine_schedule(1.0, 0.1, total=100, warmup=10, freeze=20)
    assert (frozen[:20] == 0).all() and frozen[20] == s[20]


def test_teacher_temp_schedule() -> None:
    t = teacher_temp_schedule(0.04, 0.07, total=50, warmup=30)
    assert t[0] == pytest.approx(0.04) and t[29] == pytest.approx(0.07)
    assert (t[29:] == pytest.approx(0.07)) and len(t) == 50


def test_run_schedules_default_recipe() -> None:
    cfg = replace(PRESETS["vitb14"], run=replace(PRESETS["vitb14"].run, batch_size=64))
    s = build_schedules(cfg, world_size=32)  # 2048 total, as the README's vitl16_short
    assert peak_lr(cfg, 32) == pytest.approx(0.004 * math.sqrt(2048 / 1024))
    warm = 10 * 1250
    assert s.lr[warm] == pytest.approx(peak_lr(cfg, 32)) and s.lr[-1] == pytest.approx(1e-6)
    assert s.wd[0] == pytest.approx(0.04) and s.wd[-1] == pytest.approx(0.4)
    assert s.momentum[0] == pytest.approx(0.992) and s.momentum[-1] == pytest.approx(1.0)
    assert s.teacher_temp[0] == pytest.approx(0.04)
    assert s.teacher_temp[30 * 1250 - 1] == pytest.approx(0.07)
    assert (s.last_layer_lr[:1250] == 0).all() and s.last_layer_lr[1250] == s.lr[1250]
    assert s.at(10**9)["lr"] == pytest.approx(1e-6)


def test_param_groups_multipliers() -> None:
    cfg = replace(PRESETS["tiny"].model, norm_last_layer=False)  # DINOv2: g is trained
    model = SSLModel(cfg)
    groups = param_groups(model, cfg.num_layers, layer_decay=0.9, patch_embed_mult=0.2)
    by_name = {n: g for g in groups for n in g["names"]}
    assert len(by_name) == sum(1 for _ in model.parameters())
    L = cfg.num_layers
    pe = by_name["backbone.embeddings.patch_embeddings.projection.weight"]
    assert pe["lr_mult"] == pytest.approx(0.9 ** (L + 1) * 0.2) and pe["wd_mult"] == 1.0
    cls = by_name["backbone.embeddings.cls_token"]
    assert cls["lr_mult"] == pytest.approx(0.9 ** (L + 1)) and cls["wd_mult"] == 1.0
    blk = by_name["backbone.encoder.layer.0.mlp.fc1.weight"]
    assert blk["lr_mult"] == pytest.approx(0.9**L) and blk["wd_mult"] == 1.0
    assert by_name["backbone.encoder.layer.0.mlp.fc1.bias"]["wd_mult"] == 0.0
    assert by_name["backbone.encoder.layer.3.layer_scale1.lambda1"]["wd_mult"] == 0.0
    assert by_name["backbone.encoder.layer.3.norm2.weight"]["wd_mult"] == 0.0
    assert by_name["backbone.layernorm.weight"]["lr_mult"] == 1.0
    head = by_name["dino_head.mlp.0.weight"]
    assert head["lr_mult"] == 1.0 and not head["is_last_layer"]
    last = [n for n in by_name if "last_layer" in n]
    assert len(last) == 2 and all(by_name[n]["is_last_layer"] for n in last)
    slow = param_groups(model, cfg.num_layers, 0.9, 0.2, backbone_mult=0.01)  # --init
    slow_names = {n: g for g in slow for n in g["names"]}
    assert slow_names["backbone.layernorm.weight"]["lr_mult"] == pytest.approx(0.01)
    assert slow_names["dino_head.mlp.0.weight"]["lr_mult"] == 1.0
    frozen = SSLModel(replace(cfg, norm_last_layer=True))  # DINO v1: g stays 1
    names = {n for g in param_groups(frozen, cfg.num_layers, 0.9, 0.2) for n in g["names"]}
    assert "dino_head.last_layer.parametrizations.weight.original0" not in names
    assert "dino_head.last_layer.parametrizations.weight.original1" in names
