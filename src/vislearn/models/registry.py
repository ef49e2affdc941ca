"""A name -> constructor registry for backbones (timm-style).

Every backbone is an ``nn.Module`` with:

* ``num_features`` -- width of the pooled feature vector,
* ``forward(x) -> Tensor [B, num_features]`` -- pooled features,
* ``forward_features(x, return_stages=False)`` -- pooled features, and when asked the list of
  intermediate stage maps (for multi-level losses, decoders and segmentation heads),
* ``stage_channels`` -- channel count of each stage map.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from vislearn.errors import VislearnError

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its function name."""
    _BACKBONES[fn.__name__] = fn
    return fn


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a glob ``pattern``."""
    return sorted(n for n in _BACKBONES if fnmatch.fnmatch(n, pattern))


def create_backbone(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone by name, e.g. ``create_backbone("resnet18", in_chans=1)``."""
    if name not in _BACKBONES:
        raise VislearnError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    try:
        return _BACKBONES[name](**kwargs)
    except TypeError as exc:  # wrong keyword for this backbone
        raise VislearnError(f"backbone {name!r}: {exc}") from None
