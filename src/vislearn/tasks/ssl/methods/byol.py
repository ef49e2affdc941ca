"""BYOL (Grill et al., 2020): online predictor regresses the EMA target's projection."""

from __future__ import annotations

import torch
from torch import Tensor

from vislearn.engine.momentum import momentum_copy
from vislearn.engine.ssl import SSLMethod
from vislearn.losses import byol_loss
from vislearn.models import MLPHead
from vislearn.tasks.ssl.methods.registry import register_method


@register_method("byol")
class BYOL(SSLMethod):
    """BYOL with the symmetrised loss ``(L(p1, z2) + L(p2, z1)) / 2``, ``L = 2 - 2 cos``,
    and the target momentum following the cosine schedule ``ema_base -> 1``."""

    default_augment = "byol"

    def __init__(
        self,
        proj_hidden_dim: int = 4096,
        proj_dim: int = 256,
        pred_hidden_dim: int = 4096,
        ema_base: float = 0.99,
        ema_final: float | None = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(ema_base=ema_base, ema_final=ema_final, **kwargs)
        self.save_hyperparameters()
        self.projector = MLPHead(self.backbone.num_features, proj_hidden_dim, proj_dim)
        self.predictor = MLPHead(proj_dim, pred_hidden_dim, proj_dim)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)

    def momentum_pairs(self):
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def _online(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.backbone(x)
        return feats, self.predictor(self.projector(feats))

    def _target(self, x: Tensor) -> Tensor:
        return self.momentum_projector(self.momentum_backbone(x))

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        (f1, p1), (_, p2) = self.forward_views(self._online, views[:2])
        with torch.no_grad():
            z1, z2 = self.forward_views(self._target, views[:2])
        loss = (byol_loss(p1, z2) + byol_loss(p2, z1)) / 2
        return {"loss": loss, "feats": f1}
