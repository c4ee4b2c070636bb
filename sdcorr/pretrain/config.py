"""Configuration of a DINOv2 pretraining run: frozen dataclasses, presets and YAML round trip.

Every number of the recipe (``shared/reference/dinov2-pretrain.md``) is a field. Presets:
``tiny`` (seconds on CPU, for tests), ``vits14`` and ``vitb14`` (the DINOv2 default recipe with a
ViT-S/14 or ViT-B/14 backbone), ``vitl14`` and ``vitg14`` (the recipe of DINOv2's large-run
configs, ViT-L/14 and the SwiGLU ViT-g/14). Lengths given in "epochs" are multiplied by ``epoch_length``
iterations (DINOv2's ``OFFICIAL_EPOCH_LENGTH``) and clipped to the total number of steps.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..config import lookup
from ..errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Multi-crop augmentation and iBOT masking.

    Attributes:
        global_size: side of the 2 global crops (a multiple of the patch size).
        local_size: side of the local crops (98 for patch 14, i.e. 7x7 patches).
        n_local: number of local crops per image.
        global_scale: RandomResizedCrop area range of the global crops.
        local_scale: RandomResizedCrop area range of the local crops.
        jitter: ColorJitter (brightness, contrast, saturation, hue), applied with ``p_jitter``.
        blur_probs: Gaussian-blur probability of (global crop 1, global crop 2, local crops).
            Default (0.0, 0.9, 0.5) is what the released DINOv2 code *actually* does (its
            ``GaussianBlur`` inverts p, dinov3 PR #342); (1.0, 0.1, 0.5) is the nominal/paper one.
        mask_ratio: range of the iBOT mask ratio (stratified over the masked crops).
        mask_probability: fraction of the student's global crops that get a mask.
        mask_min_patches: smallest block of the block-wise mask generator.
        mask_max_aspect: aspect ratios are log-uniform in [1/x, x].
        num_workers: DataLoader worker processes (0: load in the training process).
    """

    global_size: int = 224
    local_size: int = 98
    n_local: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    hflip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    p_jitter: float = 0.8
    p_grayscale: float = 0.2
    blur_probs: tuple[float, float, float] = (0.0, 0.9, 0.5)
    blur_kernel: int = 9
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    p_solarize: float = 0.2
    solarize_threshold: float = 128 / 255
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    mask_probability: float = 0.5
    mask_min_patches: int = 4
    mask_max_aspect: float = 1 / 0.3
    num_workers: int = 4


@dataclass(frozen=True)
class ModelConfig:
    """Backbone (``transformers.Dinov2Model``, every field explicit) and heads.

    ``norm_last_layer``: keep the heads' weight-norm gain at 1 (DINO v1; DINOv2 trains it).
    ``init``: folder of pretrained ``Dinov2Model`` weights that initialise the student and
    teacher backbones (set by ``--init``; ``None``: random init).
    """

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_ratio: int = 4
    patch_size: int = 14
    image_size: int = 224
    layerscale: float = 1e-5
    drop_path: float = 0.3
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    use_swiglu_ffn: bool = False
    num_register_tokens: int = 0
    head_prototypes: int = 65536
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_layers: int = 3
    norm_last_layer: bool = False
    ibot_separate_head: bool = False
    ibot_prototypes: int = 65536
    ibot_hidden: int = 2048
    ibot_bottleneck: int = 256
    init: str | None = None


@dataclass(frozen=True)
class LossConfig:
    """DINO, iBOT and KoLeo losses.

    Attributes:
        centering: ``"centering"`` (EMA centre, DINOv2 default) or ``"sinkhorn_knopp"``.
    """

    centering: str = "centering"
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 30
    center_momentum: float = 0.9
    sk_iterations: int = 3
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, parameter groups and schedules (lr = base_lr * sqrt(total batch / lr_ref_batch)).

    ``backbone_lr_mult`` scales the lr of every backbone parameter (1 in the recipe); the
    heads keep the full lr. ``--init`` multiplies it by ``init_lr_mult`` (pretrained backbone).
    """

    base_lr: float = 0.004
    lr_ref_batch: int = 1024
    min_lr: float = 1e-6
    warmup_epochs: float = 10
    epochs: int = 100
    epoch_length: int = 1250
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.992
    momentum_teacher_end: float = 1.0
    layer_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    backbone_lr_mult: float = 1.0
    init_lr_mult: float = 0.01
    freeze_last_layer_epochs: float = 1
    clip_grad: float = 3.0
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class RunConfig:
    """Run-level options.

    Attributes:
        batch_size: images per process (the total batch is ``batch_size * world_size``).
        steps: total iterations; ``None`` uses ``epochs * epoch_length``.
        precision: ``"bf16"`` autocast on CUDA (loss maths in fp32), ``"fp32"`` everywhere.
        parallel: ``"ddp"`` or ``"fsdp2"`` (``fully_shard``) when launched with torchrun.
        cpu_threads: torch intra-op threads during the run on CPU (``None``: leave as is). The
            tiny preset uses 1: its ops are so small that waking threads costs more than it
            saves, badly so on a loaded machine.
    """

    batch_size: int = 64
    steps: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "bf16"
    parallel: str = "ddp"
    log_every: int = 1
    checkpoint_every: int = 1250
    keep_checkpoints: int = 3
    cpu_threads: int | None = None


@dataclass(frozen=True)
class PretrainConfig:
    """A complete pretraining configuration."""

    name: str = "vitb14"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def total_steps(self) -> int:
        """Iterations of the run."""
        return self.run.steps or self.optim.epochs * self.optim.epoch_length

    def epoch_steps(self, epochs: float) -> int:
        """``epochs`` converted to iterations, clipped to ``[0, total_steps]``.

        Without ``run.steps`` an epoch is ``epoch_length`` iterations. With ``run.steps`` the
        schedule is rescaled to the run's length: ``epochs`` is the fraction
        ``epochs / optim.epochs`` of ``run.steps`` (so warm-ups and decays happen within it).
        """
        if self.run.steps:
            n = epochs / max(self.optim.epochs, 1e-9) * self.run.steps
        else:
            n = epochs * self.optim.epoch_length
        return min(self.total_steps, max(0, math.ceil(n - 1e-9)))

    def effective_schedule(self) -> dict[str, int]:
        """The schedule lengths in iterations that this run uses (written to config.yaml)."""
        o, loss = self.optim, self.loss
        return {
            "total_steps": self.total_steps,
            "lr_warmup_steps": self.epoch_steps(o.warmup_epochs),
            "freeze_last_layer_steps": self.epoch_steps(o.freeze_last_layer_epochs),
            "teacher_temp_warmup_steps": self.epoch_steps(loss.warmup_teacher_temp_epochs),
        }


def _large(name: str, width: int, depth: int, heads: int, swiglu: bool, batch: int):
    """The recipe of DINOv2's ``vitl14.yaml`` / ``vitg14.yaml``: Sinkhorn-Knopp, separate
    iBOT head, 131072 prototypes, 500 epochs with 80 warm-up epochs, lr 2e-4, no layer decay."""
    return PretrainConfig(
        name=name,
        model=ModelConfig(
            hidden_size=width, num_layers=depth, num_heads=heads, use_swiglu_ffn=swiglu,
            drop_path=0.4, head_prototypes=131072, head_bottleneck=384,
            ibot_separate_head=True, ibot_prototypes=131072,
        ),
        loss=LossConfig(centering="sinkhorn_knopp"),
        optim=OptimConfig(base_lr=2e-4, warmup_epochs=80, epochs=500, weight_decay_end=0.2,
                          momentum_teacher=0.994, layer_decay=1.0),
        run=RunConfig(batch_size=batch),
    )  # fmt: skip


PRESETS: dict[str, PretrainConfig] = {
    "vitb14": PretrainConfig(),
    "vits14": PretrainConfig(
        name="vits14", model=ModelConfig(hidden_size=384, num_heads=6, drop_path=0.1)
    ),
    "vitl14": _large("vitl14", 1024, 24, 16, swiglu=False, batch=32),
    "vitg14": _large("vitg14", 1536, 40, 24, swiglu=True, batch=12),
    "tiny": PretrainConfig(
        name="tiny",
        data=DataConfig(global_size=56, local_size=28, n_local=2, num_workers=0),
        model=ModelConfig(
            hidden_size=32,
            num_heads=2,
            mlp_ratio=2,
            image_size=56,
            drop_path=0.1,
            head_prototypes=16,
            head_hidden=64,
            head_bottleneck=32,
            ibot_prototypes=16,
            ibot_hidden=64,
            ibot_bottleneck=32,
            norm_last_layer=True,
        ),
        loss=LossConfig(warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=3),
        optim=OptimConfig(
            base_lr=0.004,
            lr_ref_batch=8,
            warmup_epochs=1,
            epochs=10,
            epoch_length=5,
            freeze_last_layer_epochs=0.4,
        ),
        run=RunConfig(batch_size=4, checkpoint_every=25, precision="fp32", cpu_threads=1),
    ),
}
PRESETS["tiny-scratch"] = replace(
    PRESETS["tiny"],
    name="tiny-scratch",
    data=replace(
        PRESETS["tiny"].data, global_scale=(0.5, 1.0), local_scale=(0.2, 0.5), p_grayscale=0.0,
        blur_probs=(0.0, 0.0, 0.0), p_solarize=0.0,
    ),
    model=replace(
        PRESETS["tiny"].model, hidden_size=64, num_layers=4, num_heads=4, layerscale=1.0,
        head_prototypes=16, ibot_prototypes=16, norm_last_layer=True,
    ),
    optim=replace(PRESETS["tiny"].optim, epoch_length=15),
    run=replace(PRESETS["tiny"].run, batch_size=8, checkpoint_every=50),
)  # fmt: skip


def get_preset(name: str) -> PretrainConfig:
    """The named preset, or :class:`ConfigError` listing the valid names."""
    return lookup(PRESETS, name, "pretrain preset")


def to_dict(cfg: PretrainConfig) -> dict[str, Any]:
    """A YAML/JSON-ready dict (tuples become lists)."""
    return _lists(dataclasses.asdict(cfg))


def _lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    return x


def merge(cfg: Any, overrides: dict[str, Any]) -> Any:
    """``cfg`` with the values of a (partial, nested) dict applied; unknown keys raise."""
    hints = typing.get_type_hints(type(cfg))
    known = {f.name for f in fields(cfg)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown config key '{key}' in {type(cfg).__name__}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}' must be a mapping")
            changes[key] = merge(current, value)
        else:
            changes[key] = _coerce(key, value, hints[key])
    return replace(cfg, **changes)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def validate(cfg: PretrainConfig) -> PretrainConfig:
    """Raise :class:`ConfigError` on values that cannot work; return ``cfg``."""
    p, d = cfg.model.patch_size, cfg.data
    for name, size in (("global_size", d.global_size), ("local_size", d.local_size)):
        if size % p:
            raise ConfigError(f"data.{name}={size} is not a multiple of the patch size {p}")
    if cfg.loss.centering not in ("centering", "sinkhorn_knopp"):
        raise ConfigError(f"loss.centering must be 'centering' or 'sinkhorn_knopp', got "
                          f"'{cfg.loss.centering}'")  # fmt: skip
    if cfg.run.precision not in ("bf16", "fp32"):
        raise ConfigError(f"run.precision must be 'bf16' or 'fp32', got '{cfg.run.precision}'")
    if cfg.run.parallel not in ("ddp", "fsdp2"):
        raise ConfigError(f"run.parallel must be 'ddp' or 'fsdp2', got '{cfg.run.parallel}'")
    if cfg.run.steps is not None and cfg.run.steps < 1:  # 0 must not mean "the preset's"
        raise ConfigError(f"run.steps (--steps) must be at least 1, got {cfg.run.steps}")
    if cfg.run.batch_size < 1 or cfg.total_steps < 1:
        raise ConfigError("run.batch_size and the number of steps must be at least 1")
    if cfg.model.hidden_size % cfg.model.num_heads:
        raise ConfigError("model.hidden_size must be divisible by model.num_heads")
    return cfg


EFFECTIVE_KEY = "effective_schedule"


def save_yaml(cfg: PretrainConfig, path: str | Path) -> Path:
    """Write ``cfg`` as YAML atomically, with its schedule in iterations under
    ``effective_schedule`` (informative: :func:`load_yaml` ignores that key)."""
    import yaml

    from ..io import atomic_path

    data = {**to_dict(cfg), EFFECTIVE_KEY: cfg.effective_schedule()}
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    return Path(path)


def load_yaml(path: str | Path, base: PretrainConfig | None = None) -> PretrainConfig:
    """Read a (possibly partial) YAML config over ``base`` (default: the ``vitb14`` preset)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} is not a mapping")
    data.pop(EFFECTIVE_KEY, None)
    return merge(base or PRESETS["vitb14"], data)
