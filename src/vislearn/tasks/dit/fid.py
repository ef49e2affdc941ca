"""Sample quality for small class-conditional DiTs: Fréchet distance (FD) on the features of a
classifier trained on the same data, and class consistency.

Inception features (FID) mean nothing on 32x32 grayscale clothing, so the benchmark follows the
usual small-data practice: a classifier is trained on the training split, its pooled
penultimate features give the statistics, and the real reference is the test split. The FD
formula is FID's, ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})``; the matrix square root's
trace is computed from the eigenvalues of ``sqrt(S1) S2 sqrt(S1)`` (symmetric, so ``eigh``, no
complex parts). Class consistency is the fraction of samples the classifier assigns to the
class they were generated for.

The classifier is a registry backbone (``resnet_tiny``, stem ``small_ds``) with a linear head,
fed images in [-1, 1] (the DiT's output range); it is saved as safetensors with its spec as
metadata and loaded without unpickling.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.artifacts import read_safetensors_metadata
from vislearn.core.errors import VislearnError
from vislearn.models import create_backbone
from vislearn.models.io import load_network, register_network, save_network
from vislearn.ops.optim import step_scheduler

__all__ = [
    "FeatureClassifier",
    "class_consistency",
    "feature_stats",
    "frechet_distance",
    "load_classifier",
    "save_classifier",
    "to_signed",
    "train_feature_classifier",
]

#: network name of a saved classifier (:func:`~vislearn.models.io.save_network`)
CLASSIFIER_ARCH = "fd_classifier"


def to_signed(images: Tensor) -> Tensor:
    """uint8 images -> float in [-1, 1] (the DiT's pixel range)."""
    return images.float() / 127.5 - 1.0


@register_network(CLASSIFIER_ARCH)
class FeatureClassifier(nn.Module):
    """``create_backbone(backbone)`` + a linear head; input in [-1, 1]."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 1,
        backbone: str = "resnet_tiny",
        backbone_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.spec = {
            "num_classes": num_classes,
            "in_chans": in_chans,
            "backbone": backbone,
            "backbone_kwargs": dict(backbone_kwargs or {"stem": "small_ds", "width": 16}),
        }
        self.backbone = create_backbone(backbone, in_chans=in_chans, **self.spec["backbone_kwargs"])
        self.head = nn.Linear(self.backbone.num_features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def embed(self, x: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
        """Features and logits of ``x`` ([-1, 1] floats or uint8), in eval mode, batched."""
        self.eval()
        device = next(self.parameters()).device
        feats, logits = [], []
        for chunk in x.split(batch_size):
            chunk = to_signed(chunk) if chunk.dtype == torch.uint8 else chunk
            f = self.features(chunk.to(device))
            feats.append(f.cpu())
            logits.append(self.head(f).cpu())
        return torch.cat(feats), torch.cat(logits)


def train_feature_classifier(
    train_images: Tensor,
    train_labels: Tensor,
    epochs: int = 3,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> FeatureClassifier:
    """Train on uint8 images ``[N, C, H, W]`` with random horizontal flips (AdamW, cosine)."""
    if train_images.dtype != torch.uint8 or train_images.ndim != 4:
        raise VislearnError("train_feature_classifier needs uint8 images [N, C, H, W]")
    torch.manual_seed(seed)
    n = train_images.shape[0]
    model = FeatureClassifier(int(train_labels.max()) + 1, train_images.shape[1]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * (n // batch_size)
    sched = step_scheduler(opt, "cosine", steps)
    gen = torch.Generator().manual_seed(seed)
    bar = _progress(steps, progress)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(n // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = to_signed(train_images[idx]).to(device)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = F.cross_entropy(model(x), train_labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar(loss.item())
    bar(None)
    return model.eval()


def _progress(total: int, enabled: bool):
    """A minimal stderr progress line (no dependency on Lightning here)."""
    state = {"i": 0}

    def update(loss: float | None) -> None:
        if not enabled:
            return
        if loss is None:
            print(file=sys.stderr)
            return
        state["i"] += 1
        if state["i"] % 20 == 0 or state["i"] == total:
            print(
                f"\rclassifier step {state['i']}/{total} loss {loss:.3f}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    return update


def save_classifier(model: FeatureClassifier, path: str | os.PathLike, **info: Any) -> None:
    """Atomically write weights + spec (and ``info``, e.g. test accuracy) as safetensors that
    rebuild the classifier alone (:func:`~vislearn.models.io.load_network`)."""
    save_network(model, path, CLASSIFIER_ARCH, model.spec, extra={"info": info})


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(model, info)`` from :func:`save_classifier`'s file (no pickle involved)."""
    path = Path(path)
    if not path.is_file():
        raise VislearnError(f"classifier not found: {path}")
    try:
        meta = read_safetensors_metadata(path)
    except VislearnError as exc:
        raise VislearnError(f"{path}: not a vislearn feature classifier ({exc})") from None
    if meta.get("network") == CLASSIFIER_ARCH:
        spec = meta.get("network_kwargs")
    else:
        spec = meta.get("spec")  # files written before save_network
    if not isinstance(spec, dict):
        raise VislearnError(f"{path}: not a vislearn feature classifier (no classifier spec)")
    model = load_network(path, CLASSIFIER_ARCH, arch=CLASSIFIER_ARCH, arch_kwargs=spec)
    info = meta.get("info") if isinstance(meta.get("info"), dict) else {}
    return model.to(device).eval(), info


def feature_stats(feats: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``[N, D]`` features, float64."""
    x = feats.detach().double().cpu().numpy()
    if x.ndim != 2 or x.shape[0] < 2:
        raise VislearnError(f"feature_stats needs [N >= 2, D] features, got {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})`` for PSD covariances."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * cross)


def class_consistency(logits: Tensor, labels: Tensor) -> float:
    """Fraction of samples classified as the class they were generated for."""
    return float((logits.argmax(1) == labels.cpu()).float().mean())
