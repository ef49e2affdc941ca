"""Backbones (registry by name), heads and weight loading."""

from vislearn.models import resnet, video, vit  # noqa: F401  (register backbones)
from vislearn.models.heads import DINOHead, MLPHead
from vislearn.models.io import load_backbone, load_network, register_network, save_network
from vislearn.models.registry import (
    backbone_modality,
    create_backbone,
    list_backbones,
    register_backbone,
)
from vislearn.models.state_dict import (
    load_vit_weights,
    load_weights,
    read_state_file,
    unwrap_state_dict,
)

__all__ = [
    "DINOHead",
    "MLPHead",
    "backbone_modality",
    "create_backbone",
    "list_backbones",
    "load_backbone",
    "load_network",
    "load_vit_weights",
    "load_weights",
    "read_state_file",
    "register_backbone",
    "register_network",
    "save_network",
    "unwrap_state_dict",
]
