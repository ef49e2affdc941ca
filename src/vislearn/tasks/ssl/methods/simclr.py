"""SimCLR (Chen et al., 2020): NT-Xent over two views, negatives from the global batch."""

from __future__ import annotations

from torch import Tensor

from vislearn.engine.ssl import SSLMethod
from vislearn.losses import nt_xent
from vislearn.models import MLPHead
from vislearn.tasks.ssl.methods.registry import register_method


@register_method("simclr")
class SimCLR(SSLMethod):
    """SimCLR with the v2-style projector (Linear-BN-ReLU-Linear); negatives are gathered
    over all ranks with gradient, so a DDP run optimises the loss of the global batch."""

    default_augment = "simclr"

    def __init__(
        self, proj_hidden_dim: int = 2048, proj_dim: int = 128, temperature: float = 0.5, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.projector = MLPHead(self.backbone.num_features, proj_hidden_dim, proj_dim)

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.backbone(x)
        return feats, self.projector(feats)

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        (f1, z1), (_, z2) = self.forward_views(self._encode, views[:2])
        loss = nt_xent(z1, z2, self.hparams.temperature, gather_distributed=True)
        return {"loss": loss, "feats": f1}
