r"""Pseudo-label pieces of semi-supervised methods (FixMatch, CoMatch, SsCL), on tensors alone.

* :func:`memory_class_distribution`: the class distribution of a sample's neighbours in an
  embedding memory, ``q_u^c = Σ_j a_uj 1[y_j = c]`` with ``a_uj = softmax_j(z_u·k_j / τ_s)``
  over the memory entries that carry a class;
* :func:`calibrate`: a classifier's prediction ``p_u`` corrected by ``q_u`` (a product or a
  mixture);
* :func:`pseudo_labels`: argmax and the confidence mask ``max_c p_u^c ≥ T``;
* :func:`masked_pseudo_label_ce`: FixMatch's unlabelled loss;
* :class:`DistributionAlignment`: ReMixMatch/CoMatch's ``p ← Normalize(p / p̄)`` with ``p̄`` the
  mean prediction over recent batches (towards a uniform class prior).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.distributed import gather_no_grad

__all__ = [
    "CALIBRATION_MODES",
    "DistributionAlignment",
    "calibrate",
    "masked_pseudo_label_ce",
    "memory_class_distribution",
    "pseudo_labels",
]

CALIBRATION_MODES = ("product", "mix", "none")


def memory_class_distribution(
    embeddings: Tensor,
    memory: Tensor,
    memory_classes: Tensor,
    num_classes: int,
    temperature: float = 0.1,
) -> Tensor | None:
    r"""Class distribution of each embedding's similarity-weighted memory neighbours.

    .. math::
        a_{uj} = \frac{e^{z_u\cdot k_j/τ_s}}{\sum_{j' \in M} e^{z_u\cdot k_{j'}/τ_s}},\qquad
        q_u^c = \sum_{j \in M} a_{uj}\,1[y_j = c]

    over ``M = {j : y_j ≥ 0}`` (entries with ``y_j = -1`` carry no class and are left out).

    Args:
        embeddings: ``[N, D]`` (normalised inside).
        memory: ``[K, D]`` keys (normalised inside).
        memory_classes: ``[K]`` long, ``-1`` for no class.
        num_classes: ``C``.
        temperature: ``τ_s > 0``.

    Returns:
        ``[N, C]`` rows summing to one, or ``None`` when no memory entry carries a class.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    valid = memory_classes >= 0
    if not bool(valid.any()):
        return None
    keys = F.normalize(memory[valid].to(embeddings), dim=1)
    attention = (F.normalize(embeddings, dim=1) @ keys.T / temperature).softmax(dim=1)
    onehot = F.one_hot(memory_classes[valid], num_classes).to(attention)
    return attention @ onehot


def calibrate(
    probs: Tensor, similarity: Tensor | None, mode: str = "product", weight: float = 1.0
) -> Tensor:
    r"""Calibrate classifier predictions ``p`` with a similarity class distribution ``q``.

    * ``"product"``: ``p̃ ∝ p ⊙ q^w`` (``w = 1``: the plain product ``Normalize(p ⊙ q)``; ``w = 0``:
      ``p``). A row whose product vanishes keeps ``p``.
    * ``"mix"``: ``p̃ = (1 - w) p + w q`` with ``w ∈ [0, 1]`` (CoMatch's memory smoothing uses
      ``w = 1 - α = 0.1``).
    * ``"none"``, or ``similarity=None`` (empty memory): ``p`` unchanged.

    Args:
        probs: ``[N, C]`` rows summing to one.
        similarity: ``[N, C]`` rows summing to one, or ``None``.
        mode: one of :data:`CALIBRATION_MODES`.
        weight: ``w ≥ 0`` (``≤ 1`` for ``"mix"``).
    """
    if mode not in CALIBRATION_MODES:
        raise ValueError(f"calibration mode must be one of {CALIBRATION_MODES}, got {mode!r}")
    if weight < 0 or (mode == "mix" and weight > 1):
        raise ValueError(f"calibration weight must be >= 0 (<= 1 for 'mix'), got {weight}")
    if mode == "none" or similarity is None:
        return probs
    if similarity.shape != probs.shape:
        raise ValueError(f"shapes differ: {tuple(probs.shape)} and {tuple(similarity.shape)}")
    if mode == "mix":
        return (1 - weight) * probs + weight * similarity
    product = probs * similarity.pow(weight)
    total = product.sum(dim=1, keepdim=True)
    return torch.where(total > 0, product / total.clamp(min=1e-30), probs)


def pseudo_labels(probs: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """``(argmax_c p^c, max_c p^c ≥ threshold)``: hard pseudo-labels and the confidence mask."""
    confidence, labels = probs.max(dim=1)
    return labels, confidence >= threshold


def masked_pseudo_label_ce(
    logits: Tensor, targets: Tensor, mask: Tensor, hard: bool = True
) -> Tensor:
    r"""FixMatch's unlabelled loss ``(1/N) Σ_u 1[mask_u] · CE(targets_u, logits_u)``.

    Averaged over *all* ``N`` rows (masked ones count as zero), as FixMatch. ``hard=True``
    uses ``argmax targets`` as the class; ``False`` the soft cross-entropy
    ``-Σ_c targets^c log softmax(logits)^c``. Zero (with a gradient path) for ``N = 0``.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if hard:
        per_row = F.cross_entropy(logits, targets.argmax(dim=1), reduction="none")
    else:
        per_row = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    return (per_row * mask.to(per_row.dtype)).mean()


class DistributionAlignment(nn.Module):
    r"""``p ← Normalize(p / p̄)``, with ``p̄`` the mean prediction of the last ``history`` batches.

    ReMixMatch's alignment ``p · π / p̄`` with a uniform target prior ``π`` (which cancels in the
    normalisation; the labelled subsets here are class-balanced), as CoMatch implements it.
    Each call first pushes the batch mean of ``probs`` (over all ranks) into a ring buffer
    ``history`` ``[H, C]`` (persistent, so a resumed run continues it), then divides by the mean
    of the filled rows.
    """

    history: Tensor
    filled: Tensor
    ptr: Tensor

    def __init__(self, num_classes: int, history: int = 128) -> None:
        super().__init__()
        if history < 1 or num_classes < 1:
            raise ValueError(f"history and num_classes must be >= 1, got {history}, {num_classes}")
        self.register_buffer("history", torch.zeros(history, num_classes))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def forward(self, probs: Tensor) -> Tensor:
        if probs.shape[0]:
            mean = gather_no_grad(probs.float()).mean(dim=0)
            self.history[int(self.ptr)] = mean.to(self.history)
            self.ptr.fill_((int(self.ptr) + 1) % self.history.shape[0])
            self.filled.fill_(min(int(self.filled) + 1, self.history.shape[0]))
        if int(self.filled) == 0:
            return probs
        average = self.history[: int(self.filled)].mean(dim=0).to(probs)
        aligned = probs / average.clamp(min=1e-12)
        return aligned / aligned.sum(dim=1, keepdim=True)
