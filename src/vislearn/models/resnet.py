"""ResNets with a configurable stem and width.

``stem="imagenet"`` is the usual 7x7/2 conv + max-pool for 224 px inputs; ``stem="small"``
is a 3x3/1 conv without pooling (the CIFAR variant, for 28-64 px); ``stem="small_ds"`` is a
3x3/2 conv, which keeps ResNet-18's depth but cuts its cost on small images ~4x (the CPU
setting in DESIGN.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vislearn.models.registry import register_backbone


def staged_forward(net: nn.Module, x: Tensor, return_stages: bool = False):
    """``net.stem``, then each of ``net.stages``, then ``net.pool`` flattened: the pooled
    features, with every stage's map when ``return_stages`` (image and video ResNets)."""
    x = net.stem(x)
    maps = []
    for stage in net.stages:
        x = stage(x)
        maps.append(x)
    pooled = torch.flatten(net.pool(x), 1)
    return (pooled, maps) if return_stages else pooled


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """A ResNet returning pooled features (and, on request, every stage's map)."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        widths: list[int] | None = None,
        in_chans: int = 3,
        stem: str = "imagenet",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        widths = widths or [64, 128, 256, 512][: len(layers)]
        stem_width = widths[0]
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        elif stem in ("small", "small_ds"):
            stride = 1 if stem == "small" else 2
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, stem_width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
            )
        else:
            raise ValueError(f"stem must be 'imagenet', 'small' or 'small_ds', got {stem!r}")
        stages, cin = [], stem_width
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = [w * block.expansion for w in widths]
        self.num_features = cin
        self.pool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each block starts as the identity (Goyal et al., 2017)
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: Tensor, return_stages: bool = False):
        return staged_forward(self, x, return_stages)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)


@register_backbone
def resnet_tiny(in_chans: int = 1, stem: str = "small", width: int = 32) -> ResNet:
    """A 3-stage, one-block-per-stage ResNet (~0.3 M params at width 32) for CPU runs."""
    return ResNet(BasicBlock, [1, 1, 1], [width, 2 * width, 4 * width], in_chans, stem)


@register_backbone
def resnet18(in_chans: int = 3, stem: str = "imagenet", width: int = 64) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], [width * m for m in (1, 2, 4, 8)], in_chans, stem)


@register_backbone
def resnet34(in_chans: int = 3, stem: str = "imagenet", width: int = 64) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], [width * m for m in (1, 2, 4, 8)], in_chans, stem)


@register_backbone
def resnet50(in_chans: int = 3, stem: str = "imagenet", width: int = 64) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], [width * m for m in (1, 2, 4, 8)], in_chans, stem)
