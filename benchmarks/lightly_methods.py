"""The peer implementations for the side-by-side benchmark: MoCo v2, SimCLR and BYOL built
from lightly's heads, losses and momentum utilities, written the way lightly's own
examples/benchmarks write them (separate forward per view, lightly's EMA update, its
NTXent memory bank).

They subclass vislearn's SSLMethod only to share what must be identical for a fair
comparison: backbone, device-side augmentation, optimiser + schedule, online probe and
logging. Everything that defines the method (heads, loss, EMA, forward pattern) is lightly's.
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules.heads import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    MoCoProjectionHead,
    SimCLRProjectionHead,
)
from lightly.models.utils import (
    batch_shuffle,
    batch_unshuffle,
    deactivate_requires_grad,
    update_momentum,
)
from lightly.utils.scheduler import cosine_schedule

from vislearn.engine.ssl import SSLMethod


def _frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    m = copy.deepcopy(module)
    deactivate_requires_grad(m)
    return m


class LightlyMoCo(SSLMethod):
    default_augment = "moco_v2"

    def __init__(
        self,
        proj_hidden_dim=2048,
        proj_dim=128,
        temperature=0.2,
        queue_size=4096,
        ema_base=0.99,
        **kwargs,
    ):
        super().__init__(ema_base=ema_base, **kwargs)
        self.projection_head = MoCoProjectionHead(
            self.backbone.num_features, proj_hidden_dim, proj_dim
        )
        self.backbone_momentum = _frozen_copy(self.backbone)
        self.projection_head_momentum = _frozen_copy(self.projection_head)
        self.criterion = NTXentLoss(temperature, memory_bank_size=(queue_size, proj_dim))

    def ssl_step(self, views, labels):
        m = self.hparams.ema_base
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)
        x0, x1 = views

        def step(xq, xk):
            fq = self.backbone(xq)
            q = self.projection_head(fq)
            with torch.no_grad():
                xk, shuffle = batch_shuffle(xk)
                k = self.projection_head_momentum(self.backbone_momentum(xk))
                k = batch_unshuffle(k, shuffle)
            return fq, q, k

        f0, q0, k1 = step(x0, x1)
        _, q1, k0 = step(x1, x0)
        loss = 0.5 * (self.criterion(q0, k1) + self.criterion(q1, k0))
        return {"loss": loss, "feats": f0}


class LightlySimCLR(SSLMethod):
    default_augment = "simclr"

    def __init__(self, proj_hidden_dim=2048, proj_dim=128, temperature=0.5, **kwargs):
        super().__init__(**kwargs)
        self.projection_head = SimCLRProjectionHead(
            self.backbone.num_features, proj_hidden_dim, proj_dim
        )
        self.criterion = NTXentLoss(temperature, gather_distributed=True)

    def ssl_step(self, views, labels):
        x0, x1 = views
        f0 = self.backbone(x0)
        z0 = self.projection_head(f0)
        z1 = self.projection_head(self.backbone(x1))
        return {"loss": self.criterion(z0, z1), "feats": f0}


class LightlyBYOL(SSLMethod):
    default_augment = "byol"

    def __init__(
        self, proj_hidden_dim=4096, proj_dim=256, pred_hidden_dim=4096, ema_base=0.99, **kwargs
    ):
        super().__init__(ema_base=ema_base, **kwargs)
        self.projection_head = BYOLProjectionHead(
            self.backbone.num_features, proj_hidden_dim, proj_dim
        )
        self.prediction_head = BYOLPredictionHead(proj_dim, pred_hidden_dim, proj_dim)
        self.backbone_momentum = _frozen_copy(self.backbone)
        self.projection_head_momentum = _frozen_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()

    def ssl_step(self, views, labels):
        m = cosine_schedule(self.global_step, self.total_steps, self.hparams.ema_base, 1.0)
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)
        x0, x1 = views
        f0 = self.backbone(x0)
        p0 = self.prediction_head(self.projection_head(f0))
        p1 = self.prediction_head(self.projection_head(self.backbone(x1)))
        with torch.no_grad():
            z0 = self.projection_head_momentum(self.backbone_momentum(x0))
            z1 = self.projection_head_momentum(self.backbone_momentum(x1))
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        return {"loss": loss, "feats": f0}


LIGHTLY_METHODS = {"moco_v2": LightlyMoCo, "simclr": LightlySimCLR, "byol": LightlyBYOL}
