"""Semi-supervised evaluation: fine-tune a whole backbone with a linear head on a seeded,
class-balanced fraction of the training labels (the 1 % / 10 % protocol of SimCLR, BYOL, ...)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vislearn.core.errors import VislearnError
from vislearn.data.augment import MultiViewAugment
from vislearn.data.subsets import balanced_subset
from vislearn.eval.finetune import finetune, linear_head_model, top1_fraction
from vislearn.ops.features import extract_features

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
    ``backbone`` itself is not changed. The loop is :func:`~vislearn.eval.finetune.finetune`;
    a non-finite loss raises :class:`~vislearn.core.errors.VislearnError`.

    Returns:
        ``semi_top1`` (test top-1 as a fraction in [0, 1], like every function of
        :mod:`vislearn.eval`; ``vislearn eval semi`` reports it in %), ``fraction``, ``seed``,
        ``num_labelled``, ``epochs`` and ``steps``.
    """
    labels = getattr(train_set, "labels", None)
    if labels is None:
        raise VislearnError("semi-supervised fine-tuning needs a labelled training set")
    if epochs < 1 or batch_size < 1:
        raise VislearnError(f"epochs and batch size must be >= 1, got {epochs}, {batch_size}")
    subset = balanced_subset(labels, fraction=fraction, seed=seed)
    num_classes = int(getattr(train_set, "num_classes", 0) or int(labels.max()) + 1)
    g = torch.Generator().manual_seed(seed)
    net = linear_head_model(backbone, num_classes, g, device)
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
    total = finetune(
        net, loader, view, epochs, lr, weight_decay, device, progress, f"fine-tune {fraction:g}"
    )
    logits, test_labels = extract_features(net, test_set, device=device, progress=progress)
    top1 = top1_fraction(logits, test_labels)
    return {
        "semi_top1": top1,
        "fraction": float(fraction),
        "seed": int(seed),
        "num_labelled": len(subset),
        "epochs": int(epochs),
        "steps": total,
    }
