"""SSL-UVOS: self-supervised video object segmentation on frozen ViT features.

Ding et al., "Betrayed by Attention" (ECCV 2024). A frozen DINO ViT gives per-frame patch keys;
one spatio-temporal transformer block is trained on unlabelled clips; at inference the block's
attention over key frames is clustered into temporally consistent objects.

Names are imported lazily, so ``import vislearn.tasks.vos.cli`` (the CLI parser) imports no torch.
"""

from __future__ import annotations

from vislearn.core.lazy import lazy_exports

_EXPORTS = {
    "SpatioTemporalBlock": "block",
    "ViTKeyFeatures": "features",
    "motion_consistency_loss": "vislearn.losses.uvos",
    "semantic_consistency_loss": "vislearn.losses.uvos",
    "UVOSClipDataset": "data",
    "UVOSModule": "module",
    "load_block": "run",
    "save_block": "run",
    "train_uvos": "run",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
