"""Extra batch augmentations a method attaches to one of its views: MRA (a frozen MAE
re-synthesises the background) and RandAugment.

Methods expose them as hyper-parameters (``batch_augment`` in ``supervised``, ``strong_augment``
in ``sscl`` / ``pseudolabel``) with the shared options ``mae`` (a local MAE file), ``mra``
(keyword arguments of :class:`~vislearn.data.mra.MaskReconstruct`) and ``randaugment``
(keyword arguments of :class:`~vislearn.data.augment.BatchRandAugment`).
"""

from __future__ import annotations

import os

from torch import nn

from vislearn.core.errors import VislearnError
from vislearn.data.augment import BatchRandAugment, MultiViewAugment
from vislearn.data.mra import MaskReconstruct
from vislearn.models.mae import load_mae

VIEW_AUGMENTS = ("mra", "randaugment")


def build_mra(mae: str | os.PathLike | None, **kwargs) -> MaskReconstruct:
    """:class:`~vislearn.data.mra.MaskReconstruct` around the frozen MAE in file ``mae``
    (``mae.safetensors`` or the MAE run's ``last.ckpt``)."""
    if not mae:
        raise VislearnError("MRA needs a pretrained MAE: pass mae=PATH (--mae on the CLI)")
    model = load_mae(mae)
    try:
        return MaskReconstruct(model, **kwargs)
    except TypeError as exc:
        raise VislearnError(f"bad MRA option: {exc}") from None


def build_randaugment(**kwargs) -> BatchRandAugment:
    try:
        return BatchRandAugment(**kwargs)
    except TypeError as exc:
        raise VislearnError(f"bad RandAugment option: {exc}") from None


def attach_view_augment(
    augment: MultiViewAugment,
    view: int,
    kind: str,
    mae: str | None = None,
    mra: dict | None = None,
    randaugment: dict | None = None,
) -> nn.Module:
    """Attach ``kind`` (``"mra"``: on the normalised view, after crop/flip/jitter;
    ``"randaugment"``: on the ``uint8`` images before the view's crop) to view ``view``."""
    if kind == "mra":
        op, stage = build_mra(mae, **(mra or {})), "normalized"
    elif kind == "randaugment":
        op, stage = build_randaugment(**(randaugment or {})), "uint8"
    else:
        raise VislearnError(f"unknown view augmentation {kind!r}; choose from {VIEW_AUGMENTS}")
    augment.add_op(view, op, stage)
    return op
