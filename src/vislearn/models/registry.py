"""A name -> constructor registry for backbones (timm-style).

Every backbone is an ``nn.Module`` with:

* ``num_features`` -- width of the pooled feature vector,
* ``forward(x) -> Tensor [B, num_features]`` -- pooled features,
* ``forward_features(x, return_stages=False)`` -- pooled features, and when asked the list of
  intermediate stage maps (for multi-level losses, decoders and segmentation heads),
* ``stage_channels`` -- channel count of each stage map.

Image backbones take ``[B, C, H, W]``; video backbones (``modality="video"``,
:mod:`vislearn.models.video`) take clips ``[B, C, T, H, W]`` and their stage maps are 5-D.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from vislearn.core.errors import VislearnError

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
_MODALITY: dict[str, str] = {}
MODALITIES = ("image", "video")


def register_backbone(
    fn: Callable[..., nn.Module] | None = None, *, modality: str = "image"
) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its function name (``@register_backbone``, or
    ``@register_backbone(modality="video")`` for a backbone of clips ``[B, C, T, H, W]``)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BACKBONES[f.__name__] = f
        _MODALITY[f.__name__] = modality
        return f

    return deco(fn) if fn is not None else deco


def list_backbones(pattern: str = "*", modality: str | None = None) -> list[str]:
    """Registered backbone names matching a glob ``pattern`` (and ``modality``, if given)."""
    return sorted(
        n for n in _BACKBONES if fnmatch.fnmatch(n, pattern) and modality in (None, _MODALITY[n])
    )


def backbone_modality(name: str) -> str:
    """``"image"`` or ``"video"`` for a registered backbone name."""
    if name not in _BACKBONES:
        raise VislearnError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    return _MODALITY[name]


def create_backbone(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone by name, e.g. ``create_backbone("resnet18", in_chans=1)``."""
    if name not in _BACKBONES:
        raise VislearnError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    try:
        return _BACKBONES[name](**kwargs)
    except TypeError as exc:  # wrong keyword for this backbone
        raise VislearnError(f"backbone {name!r}: {exc}") from None
