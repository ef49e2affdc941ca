"""Linear probe on frozen features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    batch_size: int = 512,
    seed: int = 0,
) -> dict[str, float]:
    """Train a linear classifier on pre-extracted frozen features; report top-1 in [0, 1].

    Features are standardised with the training set's mean/std (equivalent to the
    BatchNorm-without-affine that MAE/MoCo v3 put before the linear layer), then a linear
    layer is trained with SGD (momentum 0.9, cosine LR) and cross-entropy. Training on
    cached features rather than images makes the probe cheap enough to run for every
    checkpoint; the protocol is otherwise the standard one (frozen backbone, no
    augmentation at probe time -- say so when comparing with numbers that used it).
    """
    g = torch.Generator().manual_seed(seed)
    mean, std = train_feats.mean(0), train_feats.std(0) + 1e-6
    xtr, xte = (train_feats - mean) / std, (test_feats - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    head = nn.Linear(xtr.shape[1], num_classes)
    nn.init.normal_(head.weight, std=0.01, generator=g)
    nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = max(1, (len(xtr) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        for idx in perm.split(batch_size):
            loss = F.cross_entropy(head(xtr[idx]), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        train_acc = (head(xtr).argmax(1) == train_labels).float().mean().item()
        test_acc = (head(xte).argmax(1) == test_labels).float().mean().item()
    return {"train_top1": train_acc, "test_top1": test_acc}
