"""Semantic segmentation networks: a vislearn ResNet with an FCN or DeepLabv3 head.

:class:`SegmentationNet` = ``backbone`` (any registered ResNet of :mod:`vislearn.models.resnet`,
its later stages dilated to reach the requested output stride) -> ``decoder`` (torchvision's
``FCNHead`` or ``DeepLabHead`` without their last 1x1 convolution) -> one or more
``classifiers`` (1x1 convolutions, one per label space). The split lets one network carry
several heads (multi-dataset training with separate heads), a pixel-embedding projection
(:class:`PixelProjection`, MDP) on the same decoder features, and lets fine-tuning keep the
pretrained backbone and decoder while replacing the classifier.

Output stride follows DeepLab: a stage whose stride-2 convolution would take the network
beyond ``output_stride`` keeps stride 1 and dilates its 3x3 convolutions instead (the first,
formerly strided, convolution with the previous dilation, the others with the doubled one),
so receptive fields are preserved and the weights stay interchangeable with the undilated
backbone. Logits are upsampled bilinearly to the input size.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.models.io import register_network
from vislearn.models.registry import create_backbone
from vislearn.models.state_dict import load_weights, read_state_file, unwrap_state_dict

__all__ = [
    "HEADS",
    "PixelProjection",
    "SegmentationNet",
    "dilate_backbone",
    "load_segmentation_weights",
    "native_stride",
]

HEADS = ("fcn", "deeplabv3")


def _stem_stride(stem: nn.Module) -> int:
    stride = 1
    for m in stem.modules():
        if isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            stride *= int(s)
    return stride


def _strided(stage: nn.Module) -> list[nn.Conv2d]:
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m.stride[0] == 2]


def native_stride(backbone: nn.Module) -> int:
    """Output stride of an undilated ResNet (stem stride x 2 per strided stage)."""
    stride = _stem_stride(backbone.stem)
    for stage in backbone.stages:
        if _strided(stage):
            stride *= 2
    return stride


def dilate_backbone(backbone: nn.Module, output_stride: int) -> int:
    """Turn the strides of a ResNet's later stages into dilations (in place).

    Args:
        backbone: a vislearn ResNet (``stem`` + ``stages``).
        output_stride: wanted stride of the last stage map, a power of two between the stem's
            stride and the native stride.

    Returns:
        The achieved output stride (equal to ``output_stride``).
    """
    if not (hasattr(backbone, "stem") and hasattr(backbone, "stages")):
        raise VislearnError("segmentation needs a ResNet backbone (with stem and stages)")
    stem = _stem_stride(backbone.stem)
    native = native_stride(backbone)
    if (
        output_stride < stem
        or output_stride > native
        or output_stride & (output_stride - 1)
        or output_stride < 1
    ):
        raise VislearnError(
            f"output_stride must be a power of two in [{stem}, {native}] for this backbone "
            f"(stem stride {stem}, native stride {native}), got {output_stride}"
        )
    current, dilation = stem, 1
    for stage in backbone.stages:
        strided = _strided(stage)
        convs3 = [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
        if strided and current * 2 <= output_stride:
            current *= 2
            continue
        previous = dilation
        if strided:
            dilation *= 2
            for m in strided:
                m.stride = (1, 1)
        for m in convs3:
            d = previous if m in strided else dilation
            m.dilation = (d, d)
            m.padding = (d * (m.kernel_size[0] // 2), d * (m.kernel_size[1] // 2))
    return current


class PixelProjection(nn.Sequential):
    """A per-pixel MLP (1x1 conv - BN - ReLU - 1x1 conv): decoder features -> embeddings.

    The output is *not* normalised; MDP L2-normalises it (``F.normalize(z, dim=1)``).
    """

    def __init__(self, in_channels: int, out_dim: int = 128, hidden: int | None = None) -> None:
        hidden = hidden or in_channels
        super().__init__(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_dim, 1),
        )
        self.out_dim = out_dim


def _build_decoder(
    head: str, in_channels: int, head_channels: int, atrous_rates: Sequence[int]
) -> tuple[nn.Module, int]:
    """torchvision's FCN / DeepLabv3 head without its final classifier conv."""
    from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead
    from torchvision.models.segmentation.fcn import FCNHead

    if head == "fcn":
        # torchvision's FCNHead: 3x3 conv to in/4 channels, BN, ReLU, dropout 0.1, 1x1 conv
        layers = list(FCNHead(in_channels, 1).children())[:-1]
        return nn.Sequential(*layers), in_channels // 4
    if head == "deeplabv3":
        if head_channels == 256:  # exactly torchvision's DeepLabHead
            layers = list(DeepLabHead(in_channels, 1, list(atrous_rates)).children())[:-1]
            return nn.Sequential(*layers), 256
        # DeepLabHead's layers at another width (CPU-sized runs)
        return nn.Sequential(
            ASPP(in_channels, list(atrous_rates), out_channels=head_channels),
            nn.Conv2d(head_channels, head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(),
        ), head_channels
    raise VislearnError(f"unknown segmentation head {head!r}; choose from {', '.join(HEADS)}")


@register_network("segmentation_net")
class SegmentationNet(nn.Module):
    """ResNet backbone + FCN/DeepLabv3 decoder + one 1x1 classifier per label space.

    Args:
        num_classes: classes of each head (an int for one head, a list for several, an empty
            list for none: a network used through :meth:`features` only, e.g. by MDP).
        backbone: registered backbone name (``resnet_tiny``, ``resnet18``, ``resnet50``, ...).
        backbone_kwargs: extra constructor arguments (``stem``, ``width``).
        in_chans: input channels.
        head: ``"deeplabv3"`` (ASPP) or ``"fcn"``.
        output_stride: stride of the backbone's last map (dilation beyond it); ``None`` keeps
            the native stride.
        head_channels: width of the DeepLabv3 decoder (256 = torchvision's ``DeepLabHead``);
            the FCN decoder is torchvision's (``in_channels // 4``).
        atrous_rates: ASPP rates; default ``(12, 24, 36)`` scaled by ``8 / output_stride``
            (DeepLabv3's 6/12/18 at stride 16), i.e. rates in *feature-map* pixels. On small
            maps (e.g. 8x8) pass small rates such as ``(1, 2, 3)``.

    ``forward(x, head=0)`` gives logits ``[B, K, H, W]`` at the input size;
    ``features(x)`` the decoder map ``[B, D, h, w]`` (``D = out_channels``).
    """

    def __init__(
        self,
        num_classes: int | Sequence[int] = 21,
        backbone: str = "resnet50",
        backbone_kwargs: dict | None = None,
        in_chans: int = 3,
        head: str = "deeplabv3",
        output_stride: int | None = 8,
        head_channels: int = 256,
        atrous_rates: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        counts = [num_classes] if isinstance(num_classes, int) else list(num_classes)
        if any(int(n) < 1 for n in counts):
            raise VislearnError(f"num_classes must be positive, got {num_classes!r}")
        self.backbone = create_backbone(backbone, in_chans=in_chans, **(backbone_kwargs or {}))
        native = native_stride(self.backbone) if hasattr(self.backbone, "stages") else None
        self.output_stride = dilate_backbone(self.backbone, output_stride or native or 1)
        in_channels = int(self.backbone.num_features)
        if atrous_rates is None:
            scale = 8 / self.output_stride
            atrous_rates = tuple(max(1, int(round(r * scale))) for r in (12, 24, 36))
        self.decoder, self.out_channels = _build_decoder(
            head, in_channels, head_channels, atrous_rates
        )
        self.classifiers = nn.ModuleList(nn.Conv2d(self.out_channels, int(n), 1) for n in counts)
        self.num_classes = [int(n) for n in counts]
        self.config: dict[str, Any] = {
            "backbone": backbone,
            "backbone_kwargs": dict(backbone_kwargs or {}),
            "in_chans": in_chans,
            "head": head,
            "output_stride": self.output_stride,
            "head_channels": head_channels,
            "atrous_rates": [int(r) for r in atrous_rates],
        }

    def backbone_map(self, x: Tensor) -> Tensor:
        """The last stage's feature map ``[B, C, H / os, W / os]``."""
        x = self.backbone.stem(x)
        for stage in self.backbone.stages:
            x = stage(x)
        return x

    def features(self, x: Tensor) -> Tensor:
        """Decoder features ``[B, D, h, w]`` at the output stride."""
        return self.decoder(self.backbone_map(x))

    def classify(self, feats: Tensor, head: int = 0, size: Sequence[int] | None = None) -> Tensor:
        """Logits of classifier ``head`` on decoder features, resized to ``size`` if given."""
        logits = self.classifiers[head](feats)
        if size is not None and tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
        return logits

    def forward(self, x: Tensor, head: int = 0) -> Tensor:
        return self.classify(self.features(x), head, x.shape[-2:])

    def describe(self) -> str:
        """The architecture as JSON (stored in exported weight files)."""
        return json.dumps(self.arch_kwargs())

    def arch_kwargs(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this network (:func:`save_network`)."""
        return {**self.config, "num_classes": list(self.num_classes)}

    def feature_size(self, size: int) -> int:
        """Side of the decoder map for an input side ``size`` (stride-2 convs round up)."""
        side = size
        for _ in range(int(math.log2(self.output_stride))):
            side = (side + 1) // 2
        return side


def _few(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")


def load_segmentation_weights(
    net: SegmentationNet, path: str | os.PathLike, parts: Sequence[str] = ("backbone", "decoder")
) -> list[str]:
    """Load the ``parts`` of ``net`` (``backbone``, ``decoder``, ``classifiers``) from a file.

    Accepted: files exported by ``vislearn seg`` (keys ``backbone.*``, ``decoder.*``, ...),
    Lightning checkpoints of its modules (``net.backbone.*``), and -- for the backbone -- any
    backbone file :func:`vislearn.models.load_weights` reads (e.g. ``backbone.safetensors``
    of ``vislearn pretrain``). A part that is missing or does not fit (other width or depth)
    is a :class:`VislearnError` naming the keys; dilation does not change weight shapes, so
    weights move freely between output strides.

    Returns:
        The parts loaded.
    """
    unknown = [p for p in parts if p not in ("backbone", "decoder", "classifiers")]
    if unknown:
        raise VislearnError(f"unknown network parts {unknown}; use backbone, decoder, classifiers")
    sd = unwrap_state_dict(read_state_file(path))
    for prefix in ("module.net.", "net.", "module."):
        if any(k.startswith(prefix + "backbone.") for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    loaded = []
    for part in parts:
        sub = {k[len(part) + 1 :]: v for k, v in sd.items() if k.startswith(part + ".")}
        module = getattr(net, part)
        if part == "backbone" and not sub:  # a plain backbone file
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heads next to the backbone are expected
                load_weights(module, path)
            loaded.append(part)
            continue
        if not sub:
            raise VislearnError(
                f"{path} holds no {part} weights (keys like {_few(list(sd))}); "
                "transfer only the backbone (model.transfer=backbone)"
            )
        own = module.state_dict()
        missing, unexpected = own.keys() - sub.keys(), sub.keys() - own.keys()
        shape = [k for k in own.keys() & sub.keys() if own[k].shape != sub[k].shape]
        if missing or unexpected or shape:
            detail = "; ".join(
                f"{k}: file {tuple(sub[k].shape)} vs model {tuple(own[k].shape)}"
                for k in sorted(shape)[:3]
            )
            raise VislearnError(
                f"{path}: the {part} does not match this network (missing: "
                f"{_few(list(missing)) or 'none'}; unexpected: {_few(list(unexpected)) or 'none'}"
                f"{'; shapes: ' + detail if detail else ''}); use the same backbone, width and head"
            )
        module.load_state_dict(sub)
        loaded.append(part)
    return loaded
