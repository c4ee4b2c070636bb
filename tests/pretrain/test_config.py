"""Presets, YAML round trip and validation."""

from __future__ import annotations

import pytest

from sdcorr.errors import ConfigError
from sdcorr.pretrain.config import PRESETS, get_preset, load_yaml, merge, save_yaml, validate


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
    with pytest.raises(ConfigError, match="valid: tiny, vitb14, vits14"):
        get_preset("vitx")
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        validate(merge(cfg, {"data": {"local_size": 30}}))


def test_presets_follow_the_recipe() -> None:
    b = PRESETS["vitb14"]
    assert (b.data.global_size, b.data.local_size, b.data.n_local) == (224, 98, 8)
    assert b.model.head_prototypes == 65536 and b.loss.koleo_weight == 0.1
    assert b.model.num_layers == PRESETS["tiny"].model.num_layers == 12
    assert PRESETS["vits14"].model.hidden_size == 384
