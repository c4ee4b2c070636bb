"""Presets, YAML round trip and validation."""

from __future__ import annotations

import pytest
import torch
import yaml

from sdcorr.errors import ConfigError
from sdcorr.pretrain.config import PRESETS, get_preset, load_yaml, merge, save_yaml, validate
from sdcorr.pretrain.heads import build_backbone
from sdcorr.pretrain.schedules import build_schedules


def test_yaml_round_trip(tmp_path) -> None:
    for cfg in PRESETS.values():
        path = save_yaml(cfg, tmp_path / f"{cfg.name}.yaml")
        assert load_yaml(path) == cfg


def test_partial_yaml_and_errors(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("loss:\n  centering: sinkhorn_knopp\ndata:\n  n_local: 4\n")
    cfg = load_yaml(tmp_path / "c.yaml", get_preset("tiny"))
    assert cfg.loss.centering == "sinkhorn_knopp" and cfg.data.n_local == 4
    assert cfg.model == PRESETS["tiny"].model
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        merge(cfg, {"run": {"nope": 1}})
    with pytest.raises(
        ConfigError, match="valid: tiny, tiny-scratch, vitb14, vitg14, vitl14, vits14"
    ):
        get_preset("vitx")
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        validate(merge(cfg, {"data": {"local_size": 30}}))


def test_presets_follow_the_recipe() -> None:
    b = PRESETS["vitb14"]
    assert (b.data.global_size, b.data.local_size, b.data.n_local) == (224, 98, 8)
    assert b.model.head_prototypes == 65536 and b.loss.koleo_weight == 0.1
    assert b.model.num_layers == PRESETS["tiny"].model.num_layers == 12
    assert PRESETS["vits14"].model.hidden_size == 384


def _params(name: str) -> int:
    with torch.device("meta"):  # no memory: ViT-g has 1.1 B parameters
        return sum(p.numel() for p in build_backbone(PRESETS[name].model).parameters())


@pytest.mark.slow  # building ViT-g, even on the meta device, takes seconds
def test_large_presets_follow_the_large_configs() -> None:
    for name in ("vitl14", "vitg14"):
        c = PRESETS[name]
        assert c.loss.centering == "sinkhorn_knopp" and c.model.ibot_separate_head
        assert (c.model.head_prototypes, c.model.head_bottleneck) == (131072, 384)
        assert (c.optim.warmup_epochs, c.optim.epochs, c.optim.base_lr) == (80, 500, 2e-4)
        assert c.optim.layer_decay == 1.0 and c.model.drop_path == 0.4
        assert c.data.local_size == 98
    assert PRESETS["vitg14"].model.use_swiglu_ffn and not PRESETS["vitl14"].model.use_swiglu_ffn
    # ViT-L/14 has 304 M parameters, ViT-g/14 (SwiGLU) 1.1 B (DINOv2 paper / hub checkpoints)
    assert 300e6 < _params("vitl14") < 310e6
    assert 1.10e9 < _params("vitg14") < 1.16e9


def test_steps_rescale_epoch_schedules(tmp_path) -> None:
    tiny = merge(get_preset("tiny"), {"run": {"steps": 200}, "loss": {"teacher_temp": 0.07}})
    # tiny: 10 epochs, warm-up 1, last layer frozen 0.4, teacher temperature warm-up 3
    assert tiny.effective_schedule() == {"total_steps": 200, "lr_warmup_steps": 20,
                                         "freeze_last_layer_steps": 8,
                                         "teacher_temp_warmup_steps": 60}  # fmt: skip
    s = build_schedules(tiny)
    assert s.lr.argmax() == 20 and s.last_layer_lr[:8].max() == 0 and s.last_layer_lr[8] > 0
    assert s.teacher_temp[59] == pytest.approx(0.07) and s.teacher_temp[58] < 0.07
    vitb = merge(get_preset("vitb14"), {"run": {"steps": 1000}})  # 100 epochs: 10 / 30 / 1
    assert vitb.effective_schedule()["lr_warmup_steps"] == 100
    assert vitb.effective_schedule()["teacher_temp_warmup_steps"] == 300
    assert get_preset("vitb14").effective_schedule()["lr_warmup_steps"] == 10 * 1250
    path = save_yaml(tiny, tmp_path / "config.yaml")
    assert yaml.safe_load(path.read_text())["effective_schedule"]["lr_warmup_steps"] == 20
    assert load_yaml(path) == tiny  # the informative key is ignored on reading
