"""DINOv2 self-supervised pretraining of the ViT backbone (``sdcorr pretrain``).

The exported teacher backbone (``OUT/backbone``) loads with ``Dinov2Model.from_pretrained`` and
``sdcorr.features.dino.ViTExtractor.from_pretrained``. The inference path never imports this
package; importing it changes no global state.
"""

from .config import PRESETS, PretrainConfig, get_preset

__all__ = ["PRESETS", "PretrainConfig", "get_preset", "run_pretraining"]


def run_pretraining(*args, **kwargs):
    """See :func:`sdcorr.pretrain.train.run_pretraining` (imported lazily)."""
    from .train import run_pretraining as run

    return run(*args, **kwargs)
