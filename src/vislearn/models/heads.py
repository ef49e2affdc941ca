"""Projection and prediction heads (MLPs with optional BatchNorm)."""

from __future__ import annotations

from torch import Tensor, nn


class MLPHead(nn.Module):
    """``Linear -> [BN] -> ReLU`` repeated ``num_layers - 1`` times, then ``Linear [-> BN]``.

    MoCo v2: ``MLPHead(d, 2048, 128, batch_norm=False)``; SimCLR:
    ``MLPHead(d, 2048, 128, num_layers=2)``; BYOL projector/predictor:
    ``MLPHead(d, 4096, 256)`` with hidden BN.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_bn: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
