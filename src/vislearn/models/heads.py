"""Projection and prediction heads (MLPs with optional BatchNorm; DINO's head)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


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


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al., 2021).

    ``Linear -> [BN] -> GELU`` repeated ``num_layers - 1`` times to ``hidden_dim``, a linear
    layer to ``bottleneck_dim``, L2 normalisation, then a weight-normalised linear layer
    without bias to ``out_dim`` prototypes: ``last_layer.weight = g * v / ||v||`` per output
    row (``torch.nn.utils.parametrizations.weight_norm``, ``dim=0``). The gain ``g`` starts at
    1; ``norm_last_layer=True`` freezes it there (``requires_grad=False``), so every prototype
    keeps unit norm and the logits are cosines -- the paper's default, more stable for ViTs.
    ``num_layers=1`` maps ``in_dim`` straight to the bottleneck.

    Linear layers of the MLP start from a truncated normal (std 0.02) with zero bias, as in the
    paper's code; the last layer keeps PyTorch's default initialisation of ``v``.

    The gain and direction are ``last_layer.parametrizations.weight.original0`` (``[out_dim,
    1]``) and ``.original1`` (``[out_dim, bottleneck_dim]``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False), dim=0)
        gain = self.last_layer.parametrizations.weight.original0
        gain.data.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)
        self.norm_last_layer = norm_last_layer

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))
