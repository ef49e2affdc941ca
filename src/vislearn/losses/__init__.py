"""Loss functions: pure functions of tensors, each tested against an independent reference."""

from vislearn.losses.contrastive import (
    class_positive_info_nce,
    info_nce,
    multi_positive_info_nce,
    nt_xent,
)
from vislearn.losses.regression import byol_loss

__all__ = [
    "byol_loss",
    "class_positive_info_nce",
    "info_nce",
    "multi_positive_info_nce",
    "nt_xent",
]
