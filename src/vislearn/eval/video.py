"""Video evaluation: clip features, action (motion-class) accuracy by linear probe and by
fine-tuning, clip retrieval, and a background probe.

Protocols (FAME's, scaled down; the method notes §3.4):

* **Features** (:func:`extract_clip_features`): a data set item is one clip ``[T, C, H, W]``
  or ``K`` clips ``[K, T, C, H, W]`` of a video (``"uniform"`` clips: the multi-clip test);
  clips are normalised as in training, centre-cropped to ``crop_size`` if larger, and the
  pooled features are **averaged over the K clips**.
* **Linear probe**: :func:`~vislearn.eval.linear.linear_probe` on frozen multi-clip features
  of the train split, tested on the test split. For a linear classifier, the logits of the
  averaged features equal the average of per-clip logits, i.e. FAME's "outputs averaged
  over clips". The probe trains on cached features without augmentation (FAME trains its
  frozen-backbone probe on augmented clips; say so when comparing).
* **Fine-tuning** (:func:`video_finetune`): a copy of the backbone + a linear head trained
  end to end on one random augmented clip per video per step (SGD, momentum 0.9, cosine
  schedule instead of FAME's steps at 40 % / 80 %), tested with logits averaged over the
  multi-clip test clips.
* **Retrieval** (:func:`clip_retrieval`): test videos query the train videos; features
  mean-centred and L2-normalised, cosine similarity; R@k = fraction of queries with a
  same-class video among their k nearest. Centring subtracts the **gallery mean from both
  sets** by default (one transform for both; FAME's script only says "mean-centred";
  ``center="each"`` subtracts each set's own mean).
* **Background probe**: the linear probe with the background identity as the label
  (synthetic data): lower = less background in the representation. With a few distinct
  photos as backgrounds even random features identify them almost perfectly, so the probe
  saturates; :func:`variance_share` (the share of feature variance explained by the
  background identity on the unbiased test split) is a graded companion.

Functions return fractions in [0, 1]; the pipeline reports percentages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vislearn.core.errors import VislearnError
from vislearn.data.augment import ViewConfig
from vislearn.data.video.views import ClipNormalize, ClipViews
from vislearn.eval.finetune import finetune, linear_head_model, top1_fraction

__all__ = [
    "center_crop",
    "clip_retrieval",
    "extract_clip_features",
    "variance_share",
    "video_finetune",
]

RETRIEVAL_CENTERS = ("gallery", "each", "none")


def center_crop(x: Tensor, size: int | None) -> Tensor:
    """Centre crop of the last two dims to ``size`` (no-op when ``None`` or not larger)."""
    h, w = x.shape[-2:]
    if size is None or (h <= size and w <= size):
        return x
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[..., top : top + size, left : left + size]


def _clip_channels(dataset: Dataset) -> int:
    clip = dataset[0][0]
    if clip.ndim not in (4, 5):
        raise VislearnError(
            f"video evaluation needs clips [T, C, H, W] or [K, T, C, H, W], got {tuple(clip.shape)}"
        )
    return int(clip.shape[-3])


@torch.no_grad()
def extract_clip_features(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    crop_size: int | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Outputs ``[N, D]`` of ``model`` (eval mode, no grad) averaged over each video's clips,
    and labels ``[N]``. Items: ``(uint8 clip [T, C, H, W] or clips [K, T, C, H, W], label)``."""
    was_training = model.training
    model.eval().to(device)
    norm = ClipNormalize(_clip_channels(dataset)).to(device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="clip features", leave=False)
    feats, labels = [], []
    for x, y in loader:
        x = x.to(device)
        if x.ndim == 5:
            x = x.unsqueeze(1)
        b, k = x.shape[:2]
        clips = center_crop(x.flatten(0, 1), crop_size)
        out = model(norm(clips)).float()
        feats.append(out.view(b, k, -1).mean(1).cpu())
        labels.append(torch.as_tensor(y))
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def clip_retrieval(
    query: Tensor,
    query_labels: Tensor,
    gallery: Tensor,
    gallery_labels: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    center: str = "gallery",
) -> dict[str, float]:
    """Recall at k of nearest-neighbour retrieval: ``{"r1": ..., "r5": ...}`` in [0, 1].

    A query counts as a hit at ``k`` when any of its ``k`` most cosine-similar gallery items
    has its class. ``center``: ``"gallery"`` (subtract the gallery mean from both sets),
    ``"each"`` (each set its own mean) or ``"none"``; then both are L2-normalised.
    """
    if center not in RETRIEVAL_CENTERS:
        raise VislearnError(f"center must be one of {RETRIEVAL_CENTERS}, got {center!r}")
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise VislearnError(
            f"query and gallery must be [N, D] with equal D, got {tuple(query.shape)} and "
            f"{tuple(gallery.shape)}"
        )
    if not ks or min(ks) < 1:
        raise VislearnError(f"retrieval k must be positive integers, got {list(ks)}")
    q, g = query.double(), gallery.double()
    if center == "gallery":
        mu = g.mean(0)
        q, g = q - mu, g - mu
    elif center == "each":
        q, g = q - q.mean(0), g - g.mean(0)
    q, g = F.normalize(q, dim=1), F.normalize(g, dim=1)
    kmax = min(max(ks), g.shape[0])
    idx = (q @ g.T).topk(kmax, dim=1).indices
    hits = gallery_labels.to(idx.device)[idx] == query_labels.view(-1, 1).to(idx.device)
    return {f"r{k}": hits[:, : min(k, kmax)].any(1).float().mean().item() for k in ks}


def variance_share(feats: Tensor, groups: Tensor) -> float:
    r"""Share of the feature variance explained by a grouping, in [0, 1].

    Each dimension is standardised (zero mean, unit variance over the samples); then

    .. math::
        \text{share} = \frac{\sum_g n_g \lVert \bar x_g \rVert^2}{\sum_i \lVert x_i \rVert^2}

    (between-group over total sum of squares, summed over dimensions: the mean R^2 of
    predicting each feature from the group one-hot). Groups unrelated to the features give
    about ``(G - 1) / (N - 1)``.
    """
    if feats.ndim != 2 or groups.shape != (feats.shape[0],):
        raise VislearnError(
            f"feats must be [N, D] and groups [N], got {tuple(feats.shape)}, {tuple(groups.shape)}"
        )
    x = feats.double()
    x = (x - x.mean(0)) / x.std(0, unbiased=False).clamp_min(1e-12)
    total = x.square().sum()
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), x.shape[1], dtype=x.dtype).index_add_(0, inverse, x)
    between = (sums.square().sum(1) / counts.to(x.dtype)).sum()
    return float(between / total) if total > 0 else 0.0


def video_finetune(
    backbone: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    num_classes: int | None = None,
    epochs: int = 5,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
    batch_size: int = 32,
    augment: ViewConfig | None = None,
    crop_size: int | None = None,
    dropout: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, float | int]:
    """Fine-tune a copy of ``backbone`` + a linear head; multi-clip test top-1.

    Args:
        backbone: a video backbone (not changed).
        train_set: items ``(uint8 clip [T, C, H, W], label)`` (one random clip per video).
        test_set: items ``(clip or clips [K, T, C, H, W], label)``; logits averaged over K.
        num_classes: default from ``train_set.num_classes`` or the labels.
        epochs, lr, weight_decay, batch_size: SGD (momentum 0.9, no decay on norms/biases,
            cosine schedule, no warm-up); the last incomplete batch is dropped.
        augment: per-clip training augmentation (default: crop 0.2-1, flip, colour jitter
            0.4/0.4/0.4/0.1 p 0.8, grayscale 0.2, no blur). Set ``hflip_p=0`` where a flip
            changes the label.
        crop_size: training crop side and test centre crop (default: the frame side).
        dropout: before the head (FAME uses 0.7 on full-size networks).
        seed: head initialisation, batch order, augmentation.

    The loop is :func:`~vislearn.eval.finetune.finetune` (shared with
    :func:`~vislearn.eval.semi.semi_supervised_finetune`).

    Returns:
        ``finetune_top1`` (in [0, 1]), ``epochs``, ``steps``.
    """
    if epochs < 1 or batch_size < 1:
        raise VislearnError(f"epochs and batch size must be >= 1, got {epochs}, {batch_size}")
    labels = getattr(train_set, "labels", None)
    if num_classes is None:
        num_classes = int(getattr(train_set, "num_classes", 0) or 0)
        if not num_classes and labels is not None:
            num_classes = int(max(labels)) + 1
    if not num_classes:
        raise VislearnError("fine-tuning needs a labelled training set")
    first = train_set[0][0]
    if first.ndim != 4:
        raise VislearnError(
            f"fine-tuning needs one clip [T, C, H, W] per item, got {tuple(first.shape)}"
        )
    g = torch.Generator().manual_seed(seed)
    net = linear_head_model(backbone, num_classes, g, device, dropout=dropout)
    batch = min(batch_size, len(train_set))
    loader = DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=True, generator=g)
    size = crop_size or int(first.shape[-1])
    cfg = augment if augment is not None else ViewConfig(blur_p=0.0)
    views = ClipViews(cfg, size, int(first.shape[1]), seed).to(device)
    total = finetune(net, loader, views, epochs, lr, weight_decay, device, progress)
    logits, test_labels = extract_clip_features(
        net, test_set, batch_size=batch_size, device=device, crop_size=size, progress=progress
    )
    top1 = top1_fraction(logits, test_labels)
    return {"finetune_top1": top1, "epochs": int(epochs), "steps": int(total)}
