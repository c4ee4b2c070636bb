"""Backbone construction, the DINO/iBOT projection head and the student/teacher module.

The backbone is ``transformers.Dinov2Model`` (or ``Dinov2WithRegistersModel`` when register
tokens are asked for) built from a config with every field explicit. iBOT masking goes through
the upstream ``bool_masked_pos`` argument (the mask token replaces masked patch embeddings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def backbone_config(cfg: ModelConfig, drop_path: float | None = None):
    """The transformers config of the backbone (``drop_path`` overrides ``cfg.drop_path``)."""
    from transformers import Dinov2Config, Dinov2WithRegistersConfig

    kwargs = dict(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.02,
        layer_norm_eps=cfg.layer_norm_eps,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        num_channels=3,
        qkv_bias=cfg.qkv_bias,
        layerscale_value=cfg.layerscale,
        drop_path_rate=cfg.drop_path if drop_path is None else drop_path,
        use_swiglu_ffn=cfg.use_swiglu_ffn,
        use_mask_token=True,
    )
    if cfg.num_register_tokens:
        return Dinov2WithRegistersConfig(**kwargs, num_register_tokens=cfg.num_register_tokens)
    return Dinov2Config(**kwargs)


def build_backbone(cfg: ModelConfig, drop_path: float | None = None) -> nn.Module:
    """A randomly initialised ``Dinov2Model`` (SDPA attention)."""
    from transformers import Dinov2Model, Dinov2WithRegistersModel

    config = backbone_config(cfg, drop_path)
    config._attn_implementation = "sdpa"
    cls = Dinov2WithRegistersModel if cfg.num_register_tokens else Dinov2Model
    return cls(config)


class DINOHead(nn.Module):
    """MLP (``nlayers`` linear, GELU) → L2-normalise → weight-normed linear to ``out_dim``.

    Args:
        in_dim: backbone width.
        out_dim: number of prototypes K.
        hidden_dim: MLP width (2048).
        bottleneck_dim: MLP output width (256).
        nlayers: linear layers in the MLP (3).
        norm_last_layer: freeze the weight-norm gain ``g`` at 1 (DINO v1; DINOv2 trains it).
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
        nlayers: int = 3, norm_last_layer: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(nlayers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        last = nn.Linear(bottleneck_dim, out_dim, bias=False)
        nn.init.trunc_normal_(last.weight, std=0.02)
        self.last_layer = nn.utils.parametrizations.weight_norm(last)
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)  # g = 1
        if norm_last_layer:  # DINO v1's norm_last_layer: g stays 1 (logits are cosines)
            self.last_layer.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim)`` tokens → ``(..., out_dim)`` prototype logits."""
        x = self.mlp(x)
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12
        return self.last_layer(F.normalize(x, dim=-1, p=2, eps=eps))


class SSLModel(nn.Module):
    """Backbone plus DINO head (and iBOT head when separate): one of student or teacher.

    Args:
        cfg: model settings.
        drop_path: drop-path rate of the backbone (the teacher uses 0).
    """

    def __init__(self, cfg: ModelConfig, drop_path: float | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg, drop_path)
        d = cfg.hidden_size
        self.dino_head = DINOHead(d, cfg.head_prototypes, cfg.head_hidden, cfg.head_bottleneck,
                                  cfg.head_layers, cfg.norm_last_layer)  # fmt: skip
        if cfg.ibot_separate_head:
            self.ibot_head = DINOHead(d, cfg.ibot_prototypes, cfg.ibot_hidden, cfg.ibot_bottleneck,
                                      cfg.head_layers, cfg.norm_last_layer)  # fmt: skip
        self.prefix = 1 + cfg.num_register_tokens

    def tokens(
        self, pixels: torch.Tensor, masks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone tokens after the final LayerNorm.

        Args:
            pixels: ``(B, 3, S, S)`` normalised crops.
            masks: ``(B, N)`` bool iBOT mask or ``None``.

        Returns:
            CLS ``(B, D)`` and patch tokens ``(B, N, D)`` (register tokens dropped).
        """
        out = self.backbone(pixel_values=pixels, bool_masked_pos=masks).last_hidden_state
        return out[:, 0], out[:, self.prefix :]

    def heads(self, cls: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prototype logits of CLS ``(R, D)`` and selected patch tokens ``(M, D)``.

        With a shared head both go through one head call (token-wise, so identical to two).
        """
        if hasattr(self, "ibot_head"):
            return self.dino_head(cls), self.ibot_head(patches)
        out = self.dino_head(torch.cat([cls, patches]))
        return out[: len(cls)], out[len(cls) :]

    def forward(
        self, global_crops: torch.Tensor, local_crops: torch.Tensor, masks: torch.Tensor,
        mask_indices: torch.Tensor,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Student pass (one call, so DDP sees one forward).

        Args:
            global_crops: ``(2B, 3, G, G)``, masked by ``masks (2B, N)``.
            local_crops: ``(nL*B, 3, L, L)``, never masked.
            mask_indices: ``(M,)`` indices into the flattened ``(2B*N)`` patch tokens.

        Returns:
            ``global_cls (2B, D)`` backbone CLS, ``global_logits (2B, K)``,
            ``local_logits (nL*B, K)``, ``patch_logits (M, K')``.
        """
        g_cls, g_patch = self.tokens(global_crops, masks)
        cls = [g_cls]
        if len(local_crops):
            cls.insert(0, self.tokens(local_crops)[0])
        patches = g_patch.flatten(0, 1)[mask_indices]
        logits, patch_logits = self.heads(torch.cat(cls), patches)
        n_local = len(logits) - len(g_cls)
        return {
            "global_cls": g_cls,
            "global_logits": logits[n_local:],
            "local_logits": logits[:n_local],
            "patch_logits": patch_logits,
        }

    @torch.no_grad()
    def teacher_forward(
        self, global_crops: torch.Tensor, mask_indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher pass on unmasked global crops.

        Returns:
            CLS logits ``(2B, K)`` and the logits ``(M, K')`` of the patches at ``mask_indices``.
        """
        cls, patches = self.tokens(global_crops)
        return self.heads(cls, patches.flatten(0, 1)[mask_indices])
