"""What one training step hands to each loss: temperatures, centring, masks, crops.

The losses are tested in isolation in test_losses.py with explicit arguments; these tests spy on
the calls that ``train_step`` makes, so swapping the student and teacher temperatures (or the
DINO and iBOT centres, or masking the teacher) at the call site fails here.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sdcorr.pretrain import losses, train
from sdcorr.pretrain.config import get_preset
from sdcorr.pretrain.data import PretrainBatches
from sdcorr.pretrain.dist import DistInfo
from sdcorr.pretrain.heads import SSLModel
from sdcorr.pretrain.schedules import apply_schedules, build_schedules

STUDENT_T, TEACHER_T = 0.13, 0.057  # distinct from every default


def _cfg(centering: str = "centering", preset: str = "tiny"):
    cfg = get_preset(preset)
    loss = replace(cfg.loss, student_temp=STUDENT_T, centering=centering, sk_iterations=4)
    return replace(cfg, loss=loss, run=replace(cfg.run, steps=10))


class Spy:
    """Wrap ``module.name``; record bound arguments and the return value of every call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module, name: str) -> None:
        self.fn = getattr(module, name)
        self.sig = inspect.signature(self.fn)
        self.calls: list[tuple[dict, object]] = []
        monkeypatch.setattr(module, name, self)

    def __call__(self, *args, **kwargs):
        bound = self.sig.bind(*args, **kwargs)
        bound.apply_defaults()
        out = self.fn(*args, **kwargs)
        self.calls.append((dict(bound.arguments), out))
        return out


def _step(cfg, image_dir: Path, monkeypatch: pytest.MonkeyPatch, step: int = 0):
    spies = {n: Spy(monkeypatch, train, n) for n in ("dino_loss", "ibot_loss", "koleo_loss")}
    spies["sinkhorn_knopp"] = Spy(monkeypatch, train, "sinkhorn_knopp")
    centre_calls: list[tuple[str, torch.Tensor, float, torch.Tensor]] = []
    original = losses.Centering.forward

    def centre(self, logits, temp):
        out = original(self, logits, temp)
        centre_calls.append((self.name, logits.detach().clone(), temp, out))
        return out

    monkeypatch.setattr(losses.Centering, "forward", centre)
    token_calls: list[tuple[bool, torch.Tensor, torch.Tensor | None]] = []
    tokens = SSLModel.tokens

    def spy_tokens(self, pixels, masks=None):
        token_calls.append((self.training, pixels, masks))
        return tokens(self, pixels, masks)

    monkeypatch.setattr(SSLModel, "tokens", spy_tokens)
    info, device = DistInfo(), torch.device("cpu")
    state = train.build_state(cfg, device, info)
    for name, c in state.centers.items():
        c.name = name
    batch = PretrainBatches(image_dir, cfg.data, cfg.model.patch_size, cfg.run.batch_size,
                            num_steps=cfg.total_steps)[step]  # fmt: skip
    values = {**build_schedules(cfg).at(step), "teacher_temp": TEACHER_T}
    apply_schedules(state.optimizer, values)
    out = train.train_step(state, batch, cfg, values, device, info)
    return spies, centre_calls, token_calls, batch, out


def test_losses_get_the_right_temperatures_targets_and_masks(image_dir, monkeypatch) -> None:
    cfg = _cfg()
    spies, centres, tokens, batch, out = _step(cfg, image_dir, monkeypatch)
    b = cfg.run.batch_size
    # teacher targets: DINO centre on the (2B, K) CLS logits, iBOT centre on the (M, K) patch
    # logits, both at the *teacher* temperature of the schedule
    assert [c[0] for c in centres] == ["dino", "ibot"]
    assert [c[2] for c in centres] == [TEACHER_T, TEACHER_T]
    assert centres[0][1].shape == (2 * b, cfg.model.head_prototypes)
    assert centres[1][1].shape[0] == len(batch["mask_indices"]) > 0
    assert not spies["sinkhorn_knopp"].calls
    # DINO loss: student temperature, the DINO centre's targets
    (dino_args, _), = spies["dino_loss"].calls  # fmt: skip
    assert dino_args["student_temp"] == STUDENT_T
    assert dino_args["teacher_targets"] is centres[0][3]
    assert dino_args["student_global"].shape == (2 * b, cfg.model.head_prototypes)
    assert dino_args["student_local"].shape == (cfg.data.n_local * b, cfg.model.head_prototypes)
    # iBOT loss: student temperature, the iBOT centre's targets, the batch's weights, 2B crops
    (ibot_args, _), = spies["ibot_loss"].calls  # fmt: skip
    assert ibot_args["student_temp"] == STUDENT_T
    assert ibot_args["teacher_targets"] is centres[1][3]
    assert torch.equal(ibot_args["weights"], batch["mask_weights"])
    assert ibot_args["n_crops"] == 2 * b
    # KoLeo: backbone CLS of each global crop, (B, D)
    koleo = spies["koleo_loss"].calls
    assert len(koleo) == 2 and all(a["x"].shape == (b, cfg.model.hidden_size) for a, _ in koleo)
    # the teacher (eval mode) sees the unmasked global crops; the student the masked ones
    teacher = [t for t in tokens if not t[0]]
    student_global = [t for t in tokens if t[0] and t[2] is not None]
    assert len(teacher) == 1 and teacher[0][2] is None
    assert torch.equal(teacher[0][1], batch["global_crops"])
    assert len(student_global) == 1 and torch.equal(student_global[0][2], batch["masks"])
    total = out["dino_local"] + out["dino_global"] + out["ibot"] + 0.1 * out["koleo"]
    assert out["loss"] == pytest.approx(total, rel=1e-5)


def test_sinkhorn_knopp_gets_the_teacher_temperature(image_dir, monkeypatch) -> None:
    cfg = _cfg("sinkhorn_knopp")
    spies, centres, _, batch, _ = _step(cfg, image_dir, monkeypatch)
    calls = spies["sinkhorn_knopp"].calls
    assert not centres and len(calls) == 2
    for args, _ in calls:
        assert args["temp"] == TEACHER_T and args["n_iterations"] == 4
    shapes = sorted(len(a["logits"]) for a, _ in calls)
    assert shapes == sorted([2 * cfg.run.batch_size, len(batch["mask_indices"])])
    (dino_args, _), = spies["dino_loss"].calls  # fmt: skip
    assert dino_args["student_temp"] == STUDENT_T
    assert any(dino_args["teacher_targets"] is out for _, out in calls)


def _cross_image_cosine(x: torch.Tensor, b: int) -> float:
    """Mean cosine over the row pairs ``(i, j)`` of different images (row ``i`` shows image
    ``i % b``), written out pair by pair."""
    z = torch.nn.functional.normalize(x.double(), dim=-1)
    pairs = [(i, j) for i in range(len(z)) for j in range(len(z)) if i % b != j % b]
    return sum(float(z[i] @ z[j]) for i, j in pairs) / len(pairs)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def test_step_logs_collapse_diagnostics(image_dir, monkeypatch) -> None:
    """The figures a step returns are those of this step's teacher outputs and targets (the
    DINO centring's input and output), recomputed here from their definitions. The
    ``tiny-scratch`` backbone (LayerScale 1) gives different images different outputs at once."""
    cfg = _cfg(preset="tiny-scratch")
    _, centre_calls, _, batch, out = _step(cfg, image_dir, monkeypatch)
    ((_, logits, _, targets),) = [c for c in centre_calls if c[0] == "dino"]
    b = len(batch["global_crops"]) // 2
    t = targets.double()
    assert out["teacher_entropy_max"] == pytest.approx(math.log(cfg.model.head_prototypes))
    assert out["teacher_entropy_image"] == pytest.approx(float(_entropy(t).mean()), rel=1e-5)
    assert out["teacher_entropy_of_mean"] == pytest.approx(float(_entropy(t.mean(0))), rel=1e-5)
    assert out["teacher_cosine"] == pytest.approx(_cross_image_cosine(t, b), abs=1e-5)
    assert out["teacher_logit_cosine"] == pytest.approx(_cross_image_cosine(logits, b), abs=1e-5)
    # the two cosines differ here, so the test tells the targets from the logits
    assert abs(_cross_image_cosine(t, b) - _cross_image_cosine(logits, b)) > 1e-3


def test_collapse_diagnostics_tell_collapse_from_health() -> None:
    k, b = 64, 4
    same = torch.randn(1, k).expand(2 * b, k)
    uniform = torch.full((2 * b, k), 1.0 / k)
    d = train.collapse_diagnostics(same, uniform)
    assert d["teacher_entropy_image"] == pytest.approx(math.log(k), rel=1e-5)
    assert d["teacher_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert d["teacher_logit_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert train.looks_collapsed(d)
    # peaked but collapsed: every image gets the same one-hot target from different logits
    logits = torch.randn(2 * b, k)
    peaked = torch.zeros(2 * b, k)
    peaked[:, 3] = 1.0
    d = train.collapse_diagnostics(logits, peaked)
    assert d["teacher_entropy_image"] < 1e-6 and d["teacher_cosine"] == pytest.approx(1.0)
    assert train.looks_collapsed(d)
    # healthy: each image its own prototype (both crops agree), orthogonal head outputs
    logits = torch.eye(k)[torch.arange(b).repeat(2)]
    targets = torch.softmax(logits / 0.05, -1)
    d = train.collapse_diagnostics(logits, targets)
    assert d["teacher_entropy_image"] < 0.2 * math.log(k)
    assert d["teacher_cosine"] == pytest.approx(0.0, abs=1e-6)  # same-image pairs left out
    assert d["teacher_logit_cosine"] == pytest.approx(0.0, abs=1e-6)
    assert d["teacher_entropy_of_mean"] > 0.3 * math.log(k)
    assert not train.looks_collapsed(d)
