r"""DINO's self-distillation loss (Caron et al., 2021), its centre and its teacher temperature.

With student logits ``s_j`` of views ``j = 1..V`` (the ``G`` global views first, then the local
ones), teacher logits ``t_i`` of the global views ``i = 1..G``, a centre ``c``, temperatures
``τ_s`` (student) and ``τ_t`` (teacher):

.. math::
    P_t^{(i)} = \mathrm{softmax}\big((t_i - c) / τ_t\big), \qquad
    \log P_s^{(j)} = \mathrm{log\_softmax}(s_j / τ_s)

    L = \frac{1}{|\mathcal P|} \sum_{(i, j) \in \mathcal P}
        \frac{1}{N} \sum_{n=1}^{N} -\sum_k P_{t,nk}^{(i)} \log P_{s,nk}^{(j)},
    \qquad \mathcal P = \{(i, j) : i \le G,\ j \le V,\ i \ne j\}

i.e. every global teacher view supervises every *other* student view, averaged over the
``G V - G`` pairs (2 global + 6 local views: 14 pairs). The teacher side is a target: it is
detached here. After each step the centre follows the batch mean of the teacher logits over
all global views (and all ranks):

.. math::
    c \leftarrow m\,c + (1 - m)\,\frac{1}{G N_\text{global}} \sum_{i, n} t_{i,n}

The teacher temperature warms up linearly from ``warmup_teacher_temp`` to ``teacher_temp``
over ``warmup_teacher_temp_epochs`` (fractional epochs allowed) and stays there. The paper's
code holds one value per epoch, ``linspace(warmup, final, E)`` over the first ``E`` epochs (the
final value is reached at epoch ``E - 1``); here the ramp is continuous in the epoch fraction
and reaches ``teacher_temp`` at epoch ``E`` -- a documented vislearn choice that makes
fractional warm-ups meaningful. Both are constant for the default ``0.04 -> 0.04``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislearn.core.distributed import gather_no_grad

__all__ = ["DINOLoss", "dino_loss", "teacher_temperature"]


def _check(student: Sequence[Tensor], teacher: Sequence[Tensor], center: Tensor) -> None:
    if not teacher or len(student) < len(teacher):
        raise ValueError(
            f"need at least one teacher view and as many student views as teacher views "
            f"(global views first), got {len(student)} student and {len(teacher)} teacher views"
        )
    if len(student) == len(teacher) == 1:
        raise ValueError("one teacher view and one student view give no (i != j) pair")
    shape = teacher[0].shape
    if len(shape) != 2:
        raise ValueError(f"logits must be 2-D [N, K], got {tuple(shape)}")
    for x in (*student, *teacher):
        if x.shape != shape:
            raise ValueError(f"all logits must be {list(shape)} [N, K], got {list(x.shape)}")
    if center.numel() != shape[1]:
        raise ValueError(f"center has {center.numel()} entries, logits have {shape[1]}")


def dino_loss(
    student: Sequence[Tensor],
    teacher: Sequence[Tensor],
    center: Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> Tensor:
    """DINO's cross-entropy between centred, sharpened teacher and student distributions.

    Args:
        student: ``V`` tensors ``[N, K]`` of student logits, the global views first (in the
            teacher's order), then the local views.
        teacher: ``G <= V`` tensors ``[N, K]`` of teacher logits of the global views (detached
            here).
        center: ``[K]`` or ``[1, K]`` centre subtracted from the teacher logits.
        student_temp, teacher_temp: ``τ_s``, ``τ_t`` (> 0).

    Returns:
        Scalar: the mean over ``(i, j), i != j`` pairs of the batch-mean cross-entropy,
        computed in float32 (float64 for float64 logits).
    """
    _check(student, teacher, center)
    if not (student_temp > 0 and teacher_temp > 0):
        raise ValueError(f"temperatures must be > 0, got {student_temp}, {teacher_temp}")
    dtype = torch.promote_types(student[0].dtype, torch.float32)  # half precision -> float32
    c = center.detach().to(dtype).reshape(1, -1)
    targets = [F.softmax((t.detach().to(dtype) - c) / teacher_temp, dim=-1) for t in teacher]
    log_probs = [F.log_softmax(s.to(dtype) / student_temp, dim=-1) for s in student]
    total, pairs = 0.0, 0
    for i, q in enumerate(targets):
        for j, log_p in enumerate(log_probs):
            if i == j:
                continue
            total = total + (-(q * log_p).sum(dim=-1)).mean()
            pairs += 1
    return total / pairs


def teacher_temperature(
    epoch: float,
    warmup_teacher_temp: float = 0.04,
    teacher_temp: float = 0.04,
    warmup_teacher_temp_epochs: float = 0.0,
) -> float:
    """Linear warm-up of ``τ_t`` from ``warmup_teacher_temp`` (epoch 0) to ``teacher_temp``
    (epoch ``warmup_teacher_temp_epochs`` and later); ``epoch`` may be fractional."""
    if warmup_teacher_temp_epochs <= 0 or epoch >= warmup_teacher_temp_epochs:
        return teacher_temp
    frac = max(0.0, epoch) / warmup_teacher_temp_epochs
    return warmup_teacher_temp + (teacher_temp - warmup_teacher_temp) * frac


class DINOLoss(nn.Module):
    """:func:`dino_loss` with its centre: a persistent ``[1, out_dim]`` buffer (zeros at the
    start; checkpointed, so a resumed run continues it) updated by :meth:`update_center` after
    every loss evaluation in training mode.

    Under ``torch.distributed`` the batch mean of the teacher logits is the mean over all
    ranks (:func:`vislearn.core.distributed.gather_no_grad` of the per-rank means; every rank must
    hold the same number of samples, as elsewhere in vislearn), so the centre stays identical
    on every rank.
    """

    center: Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, student: Sequence[Tensor], teacher: Sequence[Tensor], teacher_temp: float
    ) -> Tensor:
        loss = dino_loss(student, teacher, self.center, self.student_temp, teacher_temp)
        if self.training:
            self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: Sequence[Tensor]) -> None:
        """``c <- m c + (1 - m) mean(teacher logits over views, batch and ranks)``."""
        t = torch.cat([x.detach().float() for x in teacher])
        batch_mean = gather_no_grad(t.mean(dim=0, keepdim=True)).mean(dim=0, keepdim=True)
        m = self.center_momentum
        self.center.mul_(m).add_(batch_mean.to(self.center), alpha=1.0 - m)
