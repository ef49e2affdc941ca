"""Semantic segmentation metrics and pictures: confusion matrix, mIoU with an ignore index,
colourised label maps.

Conventions (those of MMSegmentation / the VOC devkit): the confusion matrix ``conf[t, p]``
counts pixels of ground-truth class ``t`` predicted as ``p``, over pixels whose ground truth is
not ``ignore_index``; ``IoU_c = conf[c, c] / (sum_p conf[c, p] + sum_t conf[t, c] - conf[c, c])``;
a class that occurs neither in the ground truth nor in the predictions has no IoU (NaN) and is
left out of the mean. Scores are fractions in [0, 1]; reports multiply by 100.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vislearn.core.errors import VislearnError

__all__ = [
    "colourise",
    "confusion_matrix",
    "evaluate_segmentation",
    "prediction_grid",
    "segmentation_scores",
]


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255
) -> Tensor:
    """``conf[t, p]``, int64 ``[K, K]``, over pixels with ``target != ignore_index``.

    Args:
        pred: predicted class ids, any shape.
        target: ground-truth ids, same shape; values other than ``ignore_index`` must be in
            ``[0, num_classes)``.
    """
    if pred.shape != target.shape:
        raise VislearnError(
            f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} differ in shape"
        )
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise VislearnError(
            f"ground-truth ids outside [0, {num_classes}) that are not the ignore index "
            f"{ignore_index}"
        )
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise VislearnError(f"predicted ids outside [0, {num_classes})")
    return torch.bincount(target * num_classes + pred, minlength=num_classes**2).view(
        num_classes, num_classes
    )


def segmentation_scores(conf: Tensor, classes: Sequence[str] | None = None) -> dict:
    """mIoU, per-class IoU, pixel accuracy and mean class accuracy from a confusion matrix.

    Returns:
        ``{"miou", "pixel_acc", "mean_acc", "iou": {name: IoU or None}}`` with fractions in
        [0, 1]; a class absent from both ground truth and predictions has IoU ``None`` and
        does not count in ``miou``; ``mean_acc`` averages over classes present in the ground
        truth.
    """
    conf = conf.double()
    tp = conf.diag()
    gt, pr = conf.sum(1), conf.sum(0)
    union = gt + pr - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    acc = torch.where(gt > 0, tp / gt.clamp_min(1), torch.full_like(tp, float("nan")))
    total = conf.sum()
    names = list(classes) if classes is not None else [str(i) for i in range(len(tp))]

    def mean(x: Tensor) -> float:
        x = x[~x.isnan()]
        return float(x.mean()) if x.numel() else float("nan")

    return {
        "miou": mean(iou),
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
        "mean_acc": mean(acc),
        "iou": {
            n: (None if v != v else float(v)) for n, v in zip(names, iou.tolist(), strict=True)
        },
    }


def colourise(
    mask: Tensor | np.ndarray,
    palette: np.ndarray,
    ignore_index: int = 255,
    ignore_colour: Sequence[int] = (255, 255, 255),
) -> Tensor:
    """A label map ``[H, W]`` (or ``[B, H, W]``) as RGB uint8 ``[3, H, W]`` (``[B, 3, H, W]``):
    class ``c`` gets ``palette[c]``, ``ignore_index`` gets ``ignore_colour``."""
    m = torch.as_tensor(np.asarray(mask)).long()
    pal = torch.as_tensor(np.asarray(palette, dtype=np.uint8))
    ign = m == ignore_index
    if bool(((m < 0) | (m >= len(pal)))[~ign].any()):
        raise VislearnError(f"label ids outside the palette of {len(pal)} colours")
    rgb = pal[m.clamp(0, len(pal) - 1)]
    rgb[ign] = torch.tensor(list(ignore_colour), dtype=torch.uint8)
    return rgb.movedim(-1, -3).contiguous()


def prediction_grid(
    images: Tensor,
    targets: Tensor | None,
    preds: Tensor,
    palette: np.ndarray,
    ignore_index: int = 255,
) -> Tensor:
    """Rows of (image | ground truth | prediction) as one float image ``[3, H', W']`` in [0, 1]
    for :func:`vislearn.core.utils.save_png`; ``targets=None`` leaves the ground truth out."""
    from torchvision.utils import make_grid

    imgs = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if imgs.shape[1] == 1:
        imgs = imgs.expand(-1, 3, -1, -1)
    cols = [imgs]
    if targets is not None:
        cols.append(colourise(targets, palette, ignore_index).float() / 255.0)
    cols.append(colourise(preds, palette, ignore_index).float() / 255.0)
    tiles = torch.stack(cols, 1).flatten(0, 1)
    return make_grid(tiles, nrow=len(cols), padding=2, pad_value=1.0)


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    ignore_index: int = 255,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    classes: Sequence[str] | None = None,
) -> dict:
    """mIoU of ``model`` (uint8 images ``[B, C, H, W]`` -> logits ``[B, K, H, W]``) on
    ``dataset`` items ``(image, mask)``; :func:`segmentation_scores` plus ``"confusion"``."""
    if len(dataset) == 0:
        raise VislearnError("evaluation data set is empty")
    was_training = model.training
    model.eval().to(device)
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images, masks = batch[0].to(device), batch[1]
        logits = model(images)
        conf += confusion_matrix(logits.argmax(1).cpu(), masks, num_classes, ignore_index)
    model.train(was_training)
    return {**segmentation_scores(conf, classes), "confusion": conf.tolist()}
