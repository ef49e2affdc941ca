"""Semi-supervised evaluation: fine-tune a whole backbone with a linear head on a seeded,
class-balanced fraction of the training labels (the 1 % / 10 % protocol of SimCLR, BYOL, ...)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vislearn.core.errors import VislearnError
from vislearn.data.augment import MultiViewAugment
from vislearn.data.subsets import balanced_subset
from vislearn.ops.features import extract_features
from vislearn.ops.optim import build_optimizer, param_groups, warmup_cosine

__all__ = ["semi_supervised_finetune"]


def semi_supervised_finetune(
    backbone: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    fraction: float,
    seed: int = 0,
    epochs: int = 20,
    lr: float = 0.02,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    augment: str = "supervised",
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, float | int]:
    """Fine-tune a copy of ``backbone`` + a linear head on a labelled fraction; test top-1.

    The labelled subset is :func:`~vislearn.data.subsets.balanced_subset` of the training
    labels (``round(fraction · N_c)`` per class, seeded by ``seed``; nested across fractions).
    The whole network trains with SGD (momentum 0.9, ``weight_decay`` except on norms and
    biases, cosine learning rate over all steps, no warm-up) and cross-entropy, for ``epochs``
    passes over the subset in shuffled batches (the last incomplete batch dropped, so BatchNorm
    never sees a batch of one), each image augmented by the ``augment`` preset's first view
    (default: crop 0.5-1 + flip). The head starts at ``N(0, 0.01)`` weights and zero bias.
    ``backbone`` itself is not changed.

    Returns:
        ``semi_top1`` (test top-1 in %), ``fraction``, ``seed``, ``num_labelled``, ``epochs``
        and ``steps``.
    """
    labels = getattr(train_set, "labels", None)
    if labels is None:
        raise VislearnError("semi-supervised fine-tuning needs a labelled training set")
    if epochs < 1 or batch_size < 1:
        raise VislearnError(f"epochs and batch size must be >= 1, got {epochs}, {batch_size}")
    subset = balanced_subset(labels, fraction=fraction, seed=seed)
    num_classes = int(getattr(train_set, "num_classes", 0) or int(labels.max()) + 1)
    g = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(backbone).to(device).train()
    head = nn.Linear(model.num_features, num_classes).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.01)
        head.bias.zero_()
    net = nn.Sequential(model, head)
    batch = min(batch_size, len(subset))
    loader = DataLoader(
        Subset(train_set, subset.tolist()),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        generator=g,
    )
    first = train_set[0][0]
    view = MultiViewAugment(augment, int(first.shape[-1]), int(first.shape[0]), seed).to(device)
    opt = build_optimizer("sgd", param_groups([net], weight_decay), lr, momentum=0.9)
    total = epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, total, 0))
    epoch_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc=f"fine-tune {fraction:g}", leave=False)
    for _ in epoch_iter:
        for x, y in loader:
            loss = F.cross_entropy(net(view(x.to(device))[0]), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    logits, test_labels = extract_features(net, test_set, device=device, progress=progress)
    top1 = (logits.argmax(1) == test_labels).float().mean().item()
    return {
        "semi_top1": 100 * top1,
        "fraction": float(fraction),
        "seed": int(seed),
        "num_labelled": len(subset),
        "epochs": int(epochs),
        "steps": total,
    }
