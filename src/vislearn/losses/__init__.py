"""Loss functions: pure functions of tensors, each tested against an independent reference."""

from vislearn.losses.contrastive import (
    class_positive_info_nce,
    info_nce,
    multi_positive_info_nce,
    nt_xent,
)
from vislearn.losses.dino import DINOLoss, dino_loss, teacher_temperature
from vislearn.losses.regression import byol_loss

__all__ = [
    "DINOLoss",
    "byol_loss",
    "class_positive_info_nce",
    "dino_loss",
    "info_nce",
    "multi_positive_info_nce",
    "nt_xent",
    "teacher_temperature",
]
