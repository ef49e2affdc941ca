"""MoCo v2 (Chen et al., 2020): momentum encoder + queue of negatives + MLP head."""

from __future__ import annotations

import torch
from torch import Tensor

from vislearn.core.errors import VislearnError
from vislearn.engine.momentum import momentum_copy
from vislearn.engine.queue import MemoryQueue
from vislearn.engine.ssl import SSLMethod
from vislearn.losses import info_nce
from vislearn.models import MLPHead
from vislearn.tasks.ssl.methods.registry import register_method


def split_bn(fn, x: Tensor, splits: int, training: bool = True) -> Tensor:
    """``fn(x)`` computed on ``splits`` random groups of the batch (shuffle, split, forward each
    group, restore the order), so BatchNorm layers in ``fn`` see per-group statistics; plain
    ``fn(x)`` when ``splits == 1`` or not ``training``. The shuffle uses torch's global
    generator (seeded by the run's seed)."""
    if splits <= 1 or not training:
        return fn(x)
    if x.shape[0] < splits:
        raise VislearnError(
            f"key_bn_splits={splits} needs a batch of >= {splits}, got {x.shape[0]}"
        )
    perm = torch.randperm(x.shape[0], device=x.device)
    out = torch.cat([fn(group) for group in x[perm].tensor_split(splits)])
    return out[torch.argsort(perm)]


@register_method("moco_v2")
class MoCoV2(SSLMethod):
    """MoCo v2.

    ``symmetric=True`` (the MoCo v2+ / solo-learn variant) uses both views as queries and
    enqueues both key sets; ``False`` is the paper's one-directional loss.
    ``proj_hidden_dim=None`` makes the head's hidden width the backbone's feature width.

    ``key_bn_splits=S > 1`` is the single-device stand-in for MoCo's shuffle-BN (the split-BN
    of the MoCo authors' one-GPU CIFAR demo): in training, the momentum encoder sees the key
    batch shuffled and cut into ``S`` groups, each normalised with its own BatchNorm statistics,
    so a query and its positive key are not normalised over the same set of samples (the
    batch-statistics shortcut of He et al., 2020, Sec. 3.3). ``1`` (default) normalises the
    key batch as one group; with several devices, ``--sync-batchnorm`` is the other remedy.
    """

    default_augment = "moco_v2"

    def __init__(
        self,
        proj_hidden_dim: int | None = 2048,
        proj_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 65536,
        symmetric: bool = True,
        ema_base: float = 0.99,
        key_bn_splits: int = 1,
        **kwargs,
    ) -> None:
        if int(key_bn_splits) != key_bn_splits or key_bn_splits < 1:
            raise VislearnError(f"key_bn_splits must be an integer >= 1, got {key_bn_splits!r}")
        super().__init__(ema_base=ema_base, **kwargs)
        self.save_hyperparameters()
        d = self.backbone.num_features
        self.projector = MLPHead(d, proj_hidden_dim or d, proj_dim, batch_norm=False)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.queue = MemoryQueue(queue_size, proj_dim)

    def momentum_pairs(self):
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def _online(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.backbone(x)
        return feats, self.projector(feats)

    def _momentum(self, x: Tensor) -> Tensor:
        return split_bn(self._momentum_unsplit, x, self.hparams.key_bn_splits, self.training)

    def _momentum_unsplit(self, x: Tensor) -> Tensor:
        return self.momentum_projector(self.momentum_backbone(x))

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        (f1, q1), (f2, q2) = self.forward_views(self._online, views[:2])
        with torch.no_grad():
            k1, k2 = self.forward_views(self._momentum, views[:2])
        t, negatives = self.hparams.temperature, self.queue.negatives
        if self.hparams.symmetric:
            loss = (info_nce(q1, k2, negatives, t) + info_nce(q2, k1, negatives, t)) / 2
            # one enqueue per view: under DDP each is gathered in rank order, so the buffer
            # equals the single-process one ([k2 of all ranks; k1 of all ranks])
            self.queue.enqueue(k2)
            self.queue.enqueue(k1)
        else:
            loss = info_nce(q1, k2, negatives, t)
            self.queue.enqueue(k2)
        return {"loss": loss, "feats": f1}
