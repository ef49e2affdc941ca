"""Video backbones: clips ``[B, C, T, H, W]`` -> pooled features ``[B, num_features]``.

* ``r2plus1d_tiny`` / ``r3d_tiny``: small 3-stage residual networks for CPU runs (a width
  knob; ~0.1 M parameters at width 16). The (2+1)D block factorises each 3x3x3 convolution
  into a 1x3x3 spatial and a 3x1x1 temporal one (Tran et al., 2018); the 3D block uses plain
  3x3x3 convolutions. Layout: a stem (spatial stride 2, no temporal stride), stage 1 at the
  stem's resolution, stages 2 and 3 halve time and space. For 8 frames of 32 px the last
  map is 2 x 4 x 4. The intermediate width of a (2+1)D convolution is its output width
  (not the parameter-matching width of the paper), which keeps the tiny nets simple.
* ``r3d_18`` / ``r2plus1d_18``: torchvision's architectures (``torchvision.models.video``,
  built with ``weights=None``), classifier removed. Their parameter names are torchvision's
  (``stem.*``, ``layer1.*`` ... ``layer4.*``), so a torchvision / Kinetics state_dict saved
  to a local file loads with :func:`vislearn.models.load_weights` (its ``fc.*`` entries are
  ignored). Nothing is downloaded.

Every backbone follows the registry contract (:mod:`vislearn.models.registry`):
``num_features``, ``stage_channels`` and ``forward_features(x, return_stages=False)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.models.registry import register_backbone
from vislearn.models.resnet import staged_forward

__all__ = ["TinyVideoResNet", "TorchvisionVideoResNet"]


def _conv_bn_relu(cin: int, cout: int, kernel, stride, padding) -> list[nn.Module]:
    return [
        nn.Conv3d(cin, cout, kernel, stride, padding, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    ]


def _conv(cin: int, cout: int, stride: int, factorised: bool) -> nn.Sequential:
    """A 3x3x3 convolution (stride in time and space), or its (2+1)D factorisation
    (spatial 1x3x3 -> BN -> ReLU -> temporal 3x1x1); no BN/ReLU after the last conv."""
    if not factorised:
        return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1, bias=False))
    return nn.Sequential(
        *_conv_bn_relu(cin, cout, (1, 3, 3), (1, stride, stride), (0, 1, 1)),
        nn.Conv3d(cout, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False),
    )


class VideoBlock(nn.Module):
    """Residual basic block of two (2+1)D or 3D convolutions."""

    def __init__(self, cin: int, cout: int, stride: int, factorised: bool) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, stride, factorised)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = _conv(cout, cout, 1, factorised)
        self.bn2 = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class TinyVideoResNet(nn.Module):
    """A small video ResNet (see the module docstring).

    Args:
        in_chans: input channels.
        width: channels of stage 1; stages 2 and 3 have ``2 * width`` and ``4 * width``.
        layers: blocks per stage.
        factorised: (2+1)D blocks (True) or 3D blocks (False).
    """

    def __init__(
        self,
        in_chans: int = 3,
        width: int = 16,
        layers: tuple[int, ...] = (1, 1, 1),
        factorised: bool = True,
    ) -> None:
        super().__init__()
        if width < 1 or not layers or min(layers) < 1:
            raise VislearnError(f"width and layers must be positive, got {width}, {layers}")
        if factorised:
            stem = [
                *_conv_bn_relu(in_chans, width, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
                *_conv_bn_relu(width, width, (3, 1, 1), 1, (1, 0, 0)),
            ]
        else:
            stem = _conv_bn_relu(in_chans, width, 3, (1, 2, 2), 1)
        self.stem = nn.Sequential(*stem)
        widths = [width * 2**i for i in range(len(layers))]
        stages, cin = [], width
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(VideoBlock(cin, w, 2 if (i > 0 and j == 0) else 1, factorised))
                cin = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.stage_channels = widths
        self.num_features = cin
        self.pool = nn.AdaptiveAvgPool3d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor, return_stages: bool = False):
        _check_clip_input(x, self)
        return staged_forward(self, x, return_stages)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)


def _check_clip_input(x: Tensor, model: nn.Module) -> None:
    if x.dim() != 5:
        raise VislearnError(
            f"{type(model).__name__} takes clips [B, C, T, H, W], got a tensor of shape "
            f"{tuple(x.shape)}"
        )


class TorchvisionVideoResNet(nn.Module):
    """torchvision's ``VideoResNet`` without its classifier, with the registry's interface.

    The submodules keep torchvision's names (``stem``, ``layer1`` ... ``layer4``), so a
    torchvision state_dict loads as is. ``in_chans != 3`` replaces the stem's first
    convolution (same kernel, stride and padding).
    """

    def __init__(self, arch: str, in_chans: int = 3) -> None:
        super().__init__()
        from torchvision.models import video as tv_video

        builders = {"r3d_18": tv_video.r3d_18, "r2plus1d_18": tv_video.r2plus1d_18}
        net = builders[arch](weights=None)
        if in_chans != 3:
            old = net.stem[0]
            net.stem[0] = nn.Conv3d(
                in_chans,
                old.out_channels,
                old.kernel_size,
                old.stride,
                old.padding,
                bias=old.bias is not None,
            )
            nn.init.kaiming_normal_(net.stem[0].weight, mode="fan_out", nonlinearity="relu")
        self.stem = net.stem
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.stage_channels = [64, 128, 256, 512]
        self.num_features = 512

    def forward_features(self, x: Tensor, return_stages: bool = False):
        _check_clip_input(x, self)
        x = self.stem(x)
        maps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        pooled = torch.flatten(self.avgpool(x), 1)
        return (pooled, maps) if return_stages else pooled

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)


@register_backbone(modality="video")
def r2plus1d_tiny(
    in_chans: int = 3, width: int = 16, layers: tuple[int, ...] = (1, 1, 1)
) -> TinyVideoResNet:
    """A 3-stage (2+1)D ResNet for CPU runs (``4 * width`` features)."""
    return TinyVideoResNet(in_chans, width, tuple(layers), factorised=True)


@register_backbone(modality="video")
def r3d_tiny(
    in_chans: int = 3, width: int = 16, layers: tuple[int, ...] = (1, 1, 1)
) -> TinyVideoResNet:
    """A 3-stage 3D-convolution ResNet for CPU runs (``4 * width`` features)."""
    return TinyVideoResNet(in_chans, width, tuple(layers), factorised=False)


@register_backbone(modality="video")
def r3d_18(in_chans: int = 3) -> TorchvisionVideoResNet:
    """torchvision's R3D-18 (33 M parameters, 512 features), untrained."""
    return TorchvisionVideoResNet("r3d_18", in_chans)


@register_backbone(modality="video")
def r2plus1d_18(in_chans: int = 3) -> TorchvisionVideoResNet:
    """torchvision's R(2+1)D-18 (31 M parameters, 512 features), untrained."""
    return TorchvisionVideoResNet("r2plus1d_18", in_chans)
