"""SSL-UVOS: self-supervised video object segmentation on frozen ViT features.

Ding et al., "Betrayed by Attention" (ECCV 2024). A frozen DINO ViT gives per-frame patch keys;
one spatio-temporal transformer block is trained on unlabelled clips; at inference the block's
attention over key frames is clustered into temporally consistent objects.
"""

from vislearn.vos.block import SpatioTemporalBlock
from vislearn.vos.features import ViTKeyFeatures

__all__ = ["SpatioTemporalBlock", "ViTKeyFeatures"]
