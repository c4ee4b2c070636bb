"""``--init MODEL``: pretrained backbones, whole position table, fresh heads, guards; export."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sdcorr.cli import main
from sdcorr.errors import ModelLoadError
from sdcorr.pretrain.checkpoint import export_backbone
from sdcorr.pretrain.config import get_preset
from sdcorr.pretrain.data import PretrainBatches
from sdcorr.pretrain.dist import DistInfo
from sdcorr.pretrain.heads import SSLModel
from sdcorr.pretrain.init import apply_init, load_pretrained
from sdcorr.pretrain.schedules import apply_schedules, build_schedules
from sdcorr.pretrain.train import build_state, train_step
from sdcorr.testing import TINY_DINO


def _save(path: Path, registers: int = 0) -> Path:
    """A random DINOv2 with a 7x7 position table (98 px), optionally with registers."""
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
    )

    kw = {**TINY_DINO, "image_size": 98, "num_hidden_layers": 3, "layerscale_value": 0.5}
    torch.manual_seed(1)
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**kw, num_register_tokens=2))
    else:
        model = Dinov2Model(Dinov2Config(**kw))
    model.save_pretrained(path)
    return path


def _check_init(folder: Path, size: int = 56) -> SSLModel:
    cfg = apply_init(get_preset("tiny"), str(folder))
    state = build_state(cfg, torch.device("cpu"), DistInfo())
    student, teacher = state.student_module, state.teacher
    src = load_pretrained(folder)
    x = torch.randn(2, 3, size, size)
    ref = src(pixel_values=x).last_hidden_state
    for m in (student.backbone.eval(), teacher.backbone):
        assert torch.allclose(m(pixel_values=x).last_hidden_state, ref, atol=1e-5)
    # the pretrained table is kept whole (7x7 here), resized per forward like Dinov2Model does
    table = src.embeddings.position_embeddings
    for m in (student.backbone, teacher.backbone):
        assert torch.equal(m.embeddings.position_embeddings, table)
    torch.manual_seed(cfg.run.seed)
    fresh = SSLModel(cfg.model)  # heads come from the seed, not from the init model
    for a, b in zip(fresh.dino_head.parameters(), student.dino_head.parameters(), strict=True):
        assert torch.equal(a, b)
    return student


def test_init_copies_backbone_and_keeps_the_position_table(tmp_path: Path) -> None:
    folder = _save(tmp_path / "m")
    cfg = apply_init(get_preset("tiny"), str(folder))
    assert (cfg.model.num_layers, cfg.model.layerscale, cfg.model.image_size) == (3, 0.5, 98)
    assert cfg.model.init == str(folder)
    _check_init(folder)
    _check_init(_save(tmp_path / "r", registers=2))


@pytest.mark.realweights
def test_init_from_real_dinov2_small(dinov2_small: Path) -> None:
    student = _check_init(dinov2_small)
    assert student.backbone.config.hidden_size == 384


def test_fresh_head_is_guarded_by_frozen_last_layer(tmp_path: Path, image_dir: Path) -> None:
    cfg = apply_init(get_preset("tiny"), str(_save(tmp_path / "m")))
    cfg = replace(cfg, run=replace(cfg.run, steps=50))  # 2 frozen steps, lr warm-up 5
    state = build_state(cfg, torch.device("cpu"), DistInfo())
    head = {k: v.clone() for k, v in state.student_module.dino_head.named_parameters()}
    backbone = [p.clone() for p in state.student_module.backbone.parameters()]
    sched = build_schedules(cfg)
    data = PretrainBatches(image_dir, cfg.data, 14, cfg.run.batch_size, num_steps=50)
    for step in range(2):
        apply_schedules(state.optimizer, sched.at(step))
        train_step(state, data[step], cfg, sched.at(step), torch.device("cpu"), DistInfo())
    now = dict(state.student_module.dino_head.named_parameters())
    for k, v in head.items():
        assert torch.equal(v, now[k]) == ("last_layer" in k), k
    assert any(not torch.equal(a, b) for a, b in
               zip(backbone, state.student_module.backbone.parameters(), strict=True))  # fmt: skip


def test_init_cli_runs_and_rejects_bad_models(tmp_path: Path, image_dir: Path, capsys) -> None:
    folder = _save(tmp_path / "m")
    out = tmp_path / "run"
    base = ["-q", "pretrain", "--data", str(image_dir), "--preset", "tiny", "--steps", "2",
            "--device", "cpu"]  # fmt: skip
    assert main([*base, "--out", str(out), "--init", str(folder)]) == 0
    from transformers import Dinov2Model

    model = Dinov2Model.from_pretrained(out / "backbone")
    assert model.config.num_hidden_layers == 3 and model.config.image_size == 98
    pretrained = Dinov2Model.from_pretrained(folder).embeddings.position_embeddings
    assert model.embeddings.position_embeddings.shape == pretrained.shape  # 7x7 table exported
    assert main([*base, "--out", str(tmp_path / "x"), "--init", str(tmp_path / "nope")]) == 2
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "config.json").write_text('{"model_type": "clip"}')
    assert main([*base, "--out", str(tmp_path / "y"), "--init", str(tmp_path / "sd")]) == 2
    assert main([*base, "--out", str(out), "--init", str(folder), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "model_type 'clip'" in err and "pass only one" in err
    with pytest.raises(ModelLoadError, match="not a DINOv2"):
        apply_init(get_preset("tiny"), str(tmp_path / "sd"))


def test_export_keeps_registers_and_is_readable(tmp_path: Path) -> None:
    from transformers import AutoModel

    from sdcorr.features.dino import ViTExtractor

    cfg = replace(get_preset("tiny").model, num_register_tokens=4)
    model = SSLModel(cfg, drop_path=0.0).backbone.eval()
    old = os.umask(0o022)
    try:
        path = export_backbone(model.state_dict(), model.config, tmp_path, 56)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    for f in path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    loaded = AutoModel.from_pretrained(path).eval()
    assert type(loaded).__name__ == "Dinov2WithRegistersModel"
    x = torch.randn(1, 3, 56, 56)
    ref = model(pixel_values=x).last_hidden_state
    assert ref.shape[1] == 1 + 4 + 16
    assert torch.allclose(loaded(pixel_values=x).last_hidden_state, ref, atol=1e-6)
    ext = ViTExtractor.from_pretrained(str(path), device="cpu", image_size=56)
    assert ext.num_prefix == 5


def _lr_by_name(cfg) -> dict[str, float]:
    """The lr each student parameter gets from the optimiser at step 10 (after the warm-up)."""
    state = build_state(cfg, torch.device("cpu"), DistInfo(), load_init=False)
    apply_schedules(state.optimizer, build_schedules(cfg).at(10))
    lr = {id(p): g["lr"] for g in state.optimizer.param_groups for p in g["params"]}
    return {n: lr[id(p)] for n, p in state.student_module.named_parameters() if id(p) in lr}


def test_init_trains_the_backbone_at_a_hundredth_of_the_lr(tmp_path: Path) -> None:
    """Issue 19: the ``--init`` multiplier (0.01) reaches every backbone parameter's lr and no
    head parameter's, against the same architecture trained from scratch."""
    init = apply_init(get_preset("tiny"), str(_save(tmp_path / "m")))
    scratch = replace(init, model=replace(init.model, init=None), optim=get_preset("tiny").optim)
    assert init.optim.init_lr_mult == 0.01
    lr_init, lr_scratch = _lr_by_name(init), _lr_by_name(scratch)
    assert lr_init.keys() == lr_scratch.keys() and len(lr_init) > 10
    for name, lr in lr_init.items():
        want = 0.01 if name.startswith("backbone.") else 1.0
        assert lr == pytest.approx(want * lr_scratch[name], rel=1e-9), name
