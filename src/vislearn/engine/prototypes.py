"""Class prototypes updated by a moving average of pixel embeddings (MDP).

One unit-norm prototype per class of the concatenated label space, whatever the number of
images of the class (which counters long tails and data set imbalance). The prototypes are
buffers, not parameters: no gradient reaches them; they follow the embeddings through
:meth:`PrototypeBank.update`, called with detached embeddings after the loss of a step.

**Two-step average** (the name in the authors' rebuttal for MDP, Shi et al., arXiv 2106.04121; the
rule is our interpretation):

1. for every image ``b`` and class ``c`` present in it, the mean embedding ``m_bc`` of the
   image's pixels of class ``c``;
2. for every class, the mean of those per-image means over all images of the *global* batch
   that contain it, ``pbar_c = (1/|B_c|) sum_{b in B_c} m_bc`` (each image counts once,
   however many pixels it has: a large object does not outweigh a small one);

then ``p_c <- normalize(m * p_c + (1 - m) * pbar_c)`` for the classes present in the batch;
absent classes keep their prototype. With ``init="first_mean"`` a class seen for the first
time takes ``normalize(pbar_c)`` directly instead of blending with its random initial vector.
``average="pixel"`` replaces steps 1-2 by the plain mean over all labelled pixels.

Under DDP the per-class sums and counts of every rank are added (through
:func:`vislearn.core.distributed.gather_no_grad`) before the division, so every rank applies the
same update as a single process on the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.distributed import gather_no_grad, world_size

__all__ = ["PrototypeBank", "class_mean_stats"]


@torch.no_grad()
def class_mean_stats(
    embeddings: Tensor,
    labels: Tensor,
    image_ids: Tensor,
    num_classes: int,
    num_images: int,
    ignore_index: int = 255,
    average: str = "two_step",
) -> tuple[Tensor, Tensor]:
    """Per-class sums and counts whose ratio is the class mean of one batch.

    Args:
        embeddings: ``[N, d]`` pixel embeddings.
        labels: ``[N]`` class ids (``ignore_index`` skipped).
        image_ids: ``[N]`` index of each pixel's image in ``[0, num_images)``.
        average: ``"two_step"``: sums of per-image class means and counts of images containing
            each class; ``"pixel"``: sums of embeddings and counts of pixels.

    Returns:
        ``(sums [C, d], counts [C])`` in float64, ready to be summed over ranks.
    """
    if average not in ("two_step", "pixel"):
        raise ValueError(f"average must be two_step or pixel, got {average!r}")
    valid = labels != ignore_index
    v = embeddings[valid].double()
    y = labels[valid].long()
    d = embeddings.shape[1]
    if average == "pixel":
        sums = torch.zeros(num_classes, d, dtype=torch.float64, device=v.device)
        sums.index_add_(0, y, v)
        counts = torch.bincount(y, minlength=num_classes).double()
        return sums, counts
    key = image_ids[valid].long() * num_classes + y
    cells = num_images * num_classes
    sums = torch.zeros(cells, d, dtype=torch.float64, device=v.device).index_add_(0, key, v)
    n = torch.bincount(key, minlength=cells).double()
    means = (sums / n.clamp_min(1)[:, None]).view(num_images, num_classes, d)
    present = (n > 0).view(num_images, num_classes)
    return means.sum(0), present.sum(0).double()


class PrototypeBank(nn.Module):
    """``num_classes`` unit-norm prototypes of dimension ``dim`` with a moving-average update.

    Args:
        num_classes: size of the (concatenated) label space.
        dim: embedding dimension.
        momentum: ``m`` of the moving average (0.99: a prototype keeps ~100 steps of memory).
        average: ``"two_step"`` (default) or ``"pixel"`` (see the module docstring).
        init: ``"first_mean"`` (a class's first batch mean replaces its random vector) or
            ``"random"`` (blend from the random vector like every later step).
        seed: seed of the random unit initial vectors (its own generator).

    Buffers (saved in checkpoints): ``prototypes [C, d]`` and ``initialized [C]`` (bool).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        momentum: float = 0.99,
        average: str = "two_step",
        init: str = "first_mean",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"prototype momentum must be in [0, 1), got {momentum}")
        if init not in ("first_mean", "random"):
            raise ValueError(f"init must be first_mean or random, got {init!r}")
        if average not in ("two_step", "pixel"):
            raise ValueError(f"average must be two_step or pixel, got {average!r}")
        self.num_classes, self.dim = int(num_classes), int(dim)
        self.momentum, self.average, self.init = float(momentum), average, init
        g = torch.Generator().manual_seed(int(seed))
        self.register_buffer(
            "prototypes", F.normalize(torch.randn(num_classes, dim, generator=g), dim=1)
        )
        self.register_buffer("initialized", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def update(
        self,
        embeddings: Tensor,
        labels: Tensor,
        image_ids: Tensor,
        num_images: int,
        ignore_index: int = 255,
        momentum: float | None = None,
    ) -> Tensor:
        """Move the prototypes of the classes in this (global) batch; returns the bool mask
        ``[C]`` of the classes updated. Identical on every rank under DDP."""
        sums, counts = class_mean_stats(
            embeddings.detach(),
            labels,
            image_ids,
            self.num_classes,
            num_images,
            ignore_index,
            self.average,
        )
        if world_size() > 1:  # every rank adds the same global statistics
            sums = gather_no_grad(sums.unsqueeze(0)).sum(0)
            counts = gather_no_grad(counts.unsqueeze(0)).sum(0)
        present = counts > 0
        if not bool(present.any()):
            return present
        m = self.momentum if momentum is None else float(momentum)
        mean = sums[present] / counts[present, None]
        old = self.prototypes[present].double()
        new = m * old + (1.0 - m) * mean
        if self.init == "first_mean":
            fresh = ~self.initialized[present]
            new[fresh] = mean[fresh]
        self.prototypes[present] = F.normalize(new, dim=1).to(self.prototypes.dtype)
        self.initialized |= present
        return present

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, momentum={self.momentum}, "
            f"average={self.average}, init={self.init}"
        )
