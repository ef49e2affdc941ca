"""The fine-tuning loop shared by the image and video protocols
(:func:`~vislearn.eval.semi.semi_supervised_finetune`, :func:`~vislearn.eval.video.video_finetune`):
a copy of a backbone plus a fresh linear head, trained end to end with SGD and a cosine schedule.
Accuracies are fractions in [0, 1]; the task pipelines report percentages."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from vislearn.core.errors import VislearnError
from vislearn.ops.optim import build_optimizer, param_groups, warmup_cosine

__all__ = ["finetune", "linear_head_model", "top1_fraction"]


def linear_head_model(
    backbone: nn.Module,
    num_classes: int,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    dropout: float | None = None,
) -> nn.Sequential:
    """A copy of ``backbone`` (train mode, on ``device``) followed by an optional dropout and a
    linear head over ``backbone.num_features`` with ``N(0, 0.01)`` weights drawn from
    ``generator`` and zero bias. ``backbone`` itself is not changed."""
    model = copy.deepcopy(backbone).to(device).train()
    head = nn.Linear(model.num_features, num_classes).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.01)
        head.bias.zero_()
    if dropout is None:
        return nn.Sequential(model, head)
    return nn.Sequential(model, nn.Dropout(dropout), head)


def finetune(
    net: nn.Module,
    loader: DataLoader,
    view: Callable[[Tensor], list[Tensor]],
    epochs: int,
    lr: float,
    weight_decay: float,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "fine-tune",
) -> int:
    """Train ``net`` for ``epochs`` passes over ``loader`` (batches ``(x, y)``): cross-entropy
    of ``net(view(x)[0])``, SGD with momentum 0.9 and ``weight_decay`` except on norms and
    biases, cosine learning rate over all steps without warm-up. A non-finite loss raises
    :class:`~vislearn.core.errors.VislearnError`. Returns the number of optimiser steps."""
    opt = build_optimizer("sgd", param_groups([net], weight_decay), lr, momentum=0.9)
    total = epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, total, 0))
    epoch_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc=desc, leave=False)
    for _ in epoch_iter:
        for x, y in loader:
            loss = F.cross_entropy(net(view(x.to(device))[0]), y.to(device))
            if not torch.isfinite(loss):
                raise VislearnError(f"fine-tuning loss is {loss.item()}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return total


def top1_fraction(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of ``logits [N, K]`` against ``labels [N]``, a fraction in [0, 1]."""
    return (logits.argmax(1) == labels).float().mean().item()
