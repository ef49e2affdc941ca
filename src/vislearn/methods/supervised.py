"""Supervised training of a backbone with cross-entropy (the reference every SSL table needs)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.engine.base import SSLMethod
from vislearn.errors import VislearnError
from vislearn.methods.registry import register_method


@register_method("supervised")
class Supervised(SSLMethod):
    """Supervised cross-entropy on the labelled images of each batch (a reference row)."""

    default_augment = "supervised"

    def __init__(self, label_smoothing: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if not self.hparams.num_classes:
            raise VislearnError("supervised training needs a labelled dataset (num_classes > 0)")
        self.classifier = nn.Linear(self.backbone.num_features, self.hparams.num_classes)

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        feats = self.backbone(views[0])
        keep = labels >= 0
        if not keep.any():
            raise VislearnError("supervised training got a batch without labels")
        logits = self.classifier(feats[keep])
        loss = F.cross_entropy(logits, labels[keep], label_smoothing=self.hparams.label_smoothing)
        acc = (logits.argmax(1) == labels[keep]).float().mean()
        return {"loss": loss, "feats": feats, "top1": acc}
