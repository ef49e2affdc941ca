"""Supervised training of a backbone with cross-entropy (the reference every SSL table needs),
optionally with a batch augmentation: MRA, CutMix, Mixup or RandAugment."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.errors import VislearnError
from vislearn.data.mixing import cutmix, mixup
from vislearn.engine.augment_ops import attach_view_augment
from vislearn.engine.ssl import SSLMethod
from vislearn.tasks.ssl.methods.registry import register_method

BATCH_AUGMENTS = ("standard", "mra", "cutmix", "mixup", "randaugment")


@register_method("supervised")
class Supervised(SSLMethod):
    """Supervised cross-entropy on the labelled images of each batch (a reference row).

    The view is the ``"supervised"`` preset (random resized crop 0.5-1 + flip), then
    ``batch_augment``:

    * ``"standard"``: nothing more (the baseline).
    * ``"mra"``: MRA (:class:`~vislearn.data.mra.MaskReconstruct`) on the cropped, normalised
      view, each image with probability ``mra["prob"]``, label unchanged; ``mae`` is the local
      MAE file and ``mra`` the other MRA options (``mask_ratio``, ``score``, ``paste_back``, ...).
      With foreground masks in the batch (``data.mask_channel: true``, e.g. ``photo-fmnist``)
      ``score: oracle`` is available and every step logs ``train/mra_fg_kept``, the share of
      the object MRA kept visible in the images it rewrote.
    * ``"cutmix"`` / ``"mixup"``: with probability ``mix_prob`` per batch the labelled rows are
      mixed with a random permutation of themselves (one ``lam ~ Beta(mix_alpha, mix_alpha)``
      per batch; CutMix: one box per batch, ``lam`` from the clipped box) and the loss is
      ``lam CE(y) + (1 - lam) CE(y_perm)``. ``mix_alpha=1`` (the CIFAR setting of both papers).
    * ``"randaugment"``: torchvision's RandAugment operations per image on the ``uint8``
      images before the crop (``randaugment``: ``num_ops=2, magnitude=9`` by default).

    All randomness comes from the checkpointed augmentation generator. ``train/top1`` is
    measured against the unmixed labels.
    """

    default_augment = "supervised"

    def __init__(
        self,
        label_smoothing: float = 0.0,
        batch_augment: str = "standard",
        mae: str | None = None,
        mra: dict | None = None,
        randaugment: dict | None = None,
        mix_alpha: float = 1.0,
        mix_prob: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if not self.hparams.num_classes:
            raise VislearnError("supervised training needs a labelled dataset (num_classes > 0)")
        if batch_augment not in BATCH_AUGMENTS:
            raise VislearnError(
                f"unknown batch_augment {batch_augment!r}; choose from {', '.join(BATCH_AUGMENTS)}"
            )
        if not (mix_alpha > 0 and 0.0 <= mix_prob <= 1.0):
            raise VislearnError(
                f"need mix_alpha > 0 and mix_prob in [0, 1], got {mix_alpha}, {mix_prob}"
            )
        if batch_augment in ("mra", "randaugment"):
            attach_view_augment(self.augment, 0, batch_augment, mae, mra, randaugment)
        self.classifier = nn.Linear(self.backbone.num_features, self.hparams.num_classes)

    def mix(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, float]:
        """CutMix / Mixup of ``x`` with a random permutation of itself: ``(mixed, y_perm, lam)``
        (``lam = 1``: unmixed)."""
        h, g = self.hparams, self.augment.generator
        if h.batch_augment not in ("cutmix", "mixup") or len(x) < 2:
            return x, y, 1.0
        if float(torch.rand((), generator=g)) >= h.mix_prob:
            return x, y, 1.0
        perm = torch.randperm(len(x), generator=g).to(x.device)
        fn = cutmix if h.batch_augment == "cutmix" else mixup
        mixed, lam = fn(x, x[perm], h.mix_alpha, g)
        return mixed, y[perm], lam

    def ssl_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        keep = labels >= 0
        if not keep.any():
            raise VislearnError("supervised training got a batch without labels")
        x, y = views[0], labels[keep]
        mixed, y_perm, lam = self.mix(x[keep], y)
        if lam < 1.0:
            x = x.clone()
            x[keep] = mixed
        feats = self.backbone(x)
        logits = self.classifier(feats[keep])
        ls = self.hparams.label_smoothing
        loss = F.cross_entropy(logits, y, label_smoothing=ls)
        if lam < 1.0:
            loss = lam * loss + (1 - lam) * F.cross_entropy(logits, y_perm, label_smoothing=ls)
        acc = (logits.argmax(1) == y).float().mean()
        out = {"loss": loss, "feats": feats, "top1": acc}
        for op in getattr(self.augment, "ops", {}).values():  # MRA with true masks (images)
            if getattr(op, "last_fg_kept", None) is not None:
                out["mra_fg_kept"] = torch.tensor(op.last_fg_kept)
        return out
