"""A frozen pretrained network (backbone + optional head) used as a teacher or an evaluator.

BINGO distils from one, SaGe measures reconstructions in one. The weights come from a local
file: a vislearn ``.ckpt`` (the backbone is rebuilt from its hyper-parameters, the head from
the shapes of its weights), an exported ``backbone.safetensors``, or an external state_dict /
safetensors in the layouts :mod:`vislearn.models.io` understands (then name the
backbone). Parameters never receive gradients and are never updated; inputs can still carry
gradients through the network (SaGe's generative loss needs exactly that).
"""

from __future__ import annotations

import os
import re

from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.models.heads import MLPHead
from vislearn.models.io import load_backbone
from vislearn.models.state_dict import read_state_file, unwrap_state_dict

BN_MODES = ("eval", "train")
# where a checkpoint keeps its head, tried in order: the EMA (teacher-side) copy first
HEAD_PREFIXES = {
    "projector": ("momentum_projector.", "projector.", "head.", "module.head."),
}


class FrozenNetwork(nn.Module):
    """A pretrained ``backbone`` and optional ``head``, frozen.

    Args:
        backbone: a vislearn backbone (``forward`` -> pooled features,
            ``forward_features(x, return_stages=True)`` -> pooled and stage maps).
        head: module on the pooled features (e.g. the teacher's projection head), or None.
        bn_mode: ``"eval"`` (default): BatchNorm uses its running statistics, the network is a
            fixed function. ``"train"``: BatchNorm normalises with the statistics of each batch
            and its running statistics drift, as in BINGO's and SaGe's released code, where the
            frozen network is a submodule of a model in train mode. Weights are frozen in both.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None, bn_mode: str = "eval"):
        super().__init__()
        if bn_mode not in BN_MODES:
            raise VislearnError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        self.backbone = backbone
        self.head = head
        self.bn_mode = bn_mode
        self.requires_grad_(False)
        self.train(False)

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    @property
    def out_dim(self) -> int:
        """Width of :meth:`forward`'s output: the head's if there is one."""
        if self.head is None:
            return self.num_features
        return [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1].out_features

    def train(self, mode: bool = True) -> FrozenNetwork:
        """Follows ``bn_mode``, whatever mode the enclosing model is switched to."""
        super().train(self.bn_mode == "train")
        return self

    def features(self, x: Tensor) -> Tensor:
        """Pooled backbone features ``[N, D]`` (before the head)."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """Head output on the pooled features (the pooled features when there is no head)."""
        feats = self.backbone(x)
        return feats if self.head is None else self.head(feats)

    def stages(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Pooled features and every stage's feature map."""
        return self.backbone.forward_features(x, return_stages=True)


def mlp_head_from_state(state: dict[str, Tensor], prefix: str) -> MLPHead:
    """Rebuild an :class:`~vislearn.models.heads.MLPHead` from its weights under ``prefix``
    (``<prefix>net.<i>.weight`` ...): depth, widths and BatchNorm placement come from the
    tensors, so any head vislearn saved loads without its config."""
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    idx = sorted({int(m.group(1)) for k in sub if (m := re.match(r"net\.(\d+)\.", k))})
    linears = [
        i
        for i in idx
        if sub.get(f"net.{i}.weight") is not None and sub[f"net.{i}.weight"].dim() == 2
    ]
    if not linears:
        raise VislearnError(f"no MLP head weights under {prefix!r}")
    dims = [sub[f"net.{linears[0]}.weight"].shape[1]] + [
        sub[f"net.{i}.weight"].shape[0] for i in linears
    ]
    hidden_bn = f"net.{linears[0] + 1}.running_mean" in sub if len(linears) > 1 else False
    last_bn = f"net.{linears[-1] + 1}.running_mean" in sub
    if len(set(dims[1:-1])) > 1:
        raise VislearnError(f"head under {prefix!r} has unequal hidden widths {dims[1:-1]}")
    head = MLPHead(
        dims[0],
        dims[1] if len(dims) > 2 else dims[-1],
        dims[-1],
        num_layers=len(linears),
        batch_norm=hidden_bn,
        last_bn=last_bn,
    )
    head.load_state_dict(sub)  # strict: a head of another shape is an error here
    return head


def load_frozen(
    path: str | os.PathLike,
    head: str | None = None,
    bn_mode: str = "eval",
    backbone: str | None = None,
    backbone_kwargs: dict | None = None,
    in_chans: int | None = None,
) -> FrozenNetwork:
    """Load a frozen network from a local file.

    Args:
        path: vislearn ``.ckpt`` / exported ``.safetensors`` (the backbone rebuilds itself),
            or external weights (then pass ``backbone`` and its kwargs).
        head: ``None`` (backbone only) or ``"projector"``: the checkpoint's projection head
            (its momentum copy if present, as a teacher's keys come from it), e.g. a MoCo v2
            teacher's ``2048 -> 2048 -> 128`` MLP. A checkpoint without one is an error.
        bn_mode: see :class:`FrozenNetwork`.
    """
    net = load_backbone(path, backbone, backbone_kwargs, in_chans)
    mlp = None
    if head is not None:
        if head not in HEAD_PREFIXES:
            raise VislearnError(
                f"head must be None or one of {sorted(HEAD_PREFIXES)}, got {head!r}"
            )
        state = unwrap_state_dict(read_state_file(path))
        prefix = next(
            (p for p in HEAD_PREFIXES[head] if any(k.startswith(p + "net.") for k in state)), None
        )
        if prefix is None:
            raise VislearnError(
                f"{path} holds no {head} head (looked for keys starting with "
                f"{', '.join(HEAD_PREFIXES[head])}); pass a full training checkpoint (.ckpt)"
            )
        mlp = mlp_head_from_state(state, prefix)
        if [m for m in mlp.modules() if isinstance(m, nn.Linear)][
            0
        ].in_features != net.num_features:
            raise VislearnError(f"{path}: the {head} head does not fit the backbone's features")
    return FrozenNetwork(net, mlp, bn_mode)
