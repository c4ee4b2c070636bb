"""Start a run from pretrained DINOv2 weights (``--init MODEL``).

The model is named like the extractors name theirs (hub id, alias or local folder, resolved by
:func:`sdcorr.hub.resolve_model`). Its architecture replaces the preset's backbone fields; its
weights initialise the student and teacher backbones. The position table keeps its pretrained
size (37x37 for the released models): ``Dinov2Model`` resizes it to each crop's grid on every
forward, so the initialised backbone computes exactly what the pretrained model computes on a
crop, and the exported backbone still carries the full table. (Storing a table resized to the
tiny preset's 4x4 crop grid and exporting that lost 6.6 points of PCK@0.1 on spair-mini; see
docs/pretrain.md.) The heads stay freshly initialised; the last-layer freeze and the lr warm-up
of the schedule guard them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .config import PretrainConfig

log = logging.getLogger("sdcorr.pretrain")


def resolve_init(name: str) -> Path:
    """Local folder of the ``--init`` model (``ModelNotFoundError`` when unavailable)."""
    from ..hub import resolve_model

    return resolve_model(name, "dino")


def apply_init(cfg: PretrainConfig, name: str) -> PretrainConfig:
    """``cfg`` with the backbone architecture of model ``name`` and ``model.init`` set.

    The crop sizes, heads, losses and schedules of ``cfg`` stay; ``image_size`` is the pretrained
    model's (its position table is kept whole), and the backbone lr is multiplied by
    ``optim.init_lr_mult`` (0.01 by default: the fresh heads learn at the full lr while the
    pretrained features move slowly).

    Raises:
        ConfigError: the folder is not a DINOv2 model.
    """
    path = resolve_init(name)
    try:
        hf = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"--init {name}: cannot read {path / 'config.json'}: {err}") from None
    if hf.get("model_type") not in ("dinov2", "dinov2_with_registers"):
        raise ConfigError(
            f"--init {name}: model_type '{hf.get('model_type')}' is not a DINOv2 backbone"
        )
    m = cfg.model
    model = replace(
        m,
        init=str(path),
        hidden_size=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=int(hf["num_attention_heads"]),
        mlp_ratio=int(hf.get("mlp_ratio", 4)),
        patch_size=int(hf["patch_size"]),
        image_size=int(hf.get("image_size", 518)),
        layerscale=float(hf.get("layerscale_value", 1.0)),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-6)),
        qkv_bias=bool(hf.get("qkv_bias", True)),
        use_swiglu_ffn=bool(hf.get("use_swiglu_ffn", False)),
        num_register_tokens=int(hf.get("num_register_tokens", 0)),
    )
    optim = replace(cfg.optim, backbone_lr_mult=cfg.optim.backbone_lr_mult * cfg.optim.init_lr_mult)
    return replace(cfg, model=model, optim=optim)


def load_pretrained(path: str | Path) -> nn.Module:
    """The pretrained backbone (``Dinov2Model`` or ``Dinov2WithRegistersModel``), fp32, eval;
    a folder that cannot be loaded is one :class:`~sdcorr.errors.ModelLoadError` line."""
    from ..features.dino import load_vit

    return load_vit(Path(path), torch.float32).eval()


def init_backbone(backbone: nn.Module, path: str | Path) -> None:
    """Load the pretrained weights of ``path`` into ``backbone`` (every tensor, the position
    table at its pretrained size: ``Dinov2Model`` resizes it to each crop on the fly)."""
    state = load_pretrained(path).state_dict()
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"--init {path}: weights do not fit the backbone (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    log.info("backbone initialised from %s", path)
