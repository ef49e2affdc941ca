r"""The cross-sample multi-positive MoCo loss of CsMl ("Seed the Views"), also BINGO's template.

Notation (all embeddings L2-normalised inside): ``q``/``k`` query and key of the anchor,
``q_nb``/``k_nb`` of its kNN neighbour, ``q_mix`` the query of the CutMix of the anchor's and
the neighbour's query views, ``λ`` the fraction of anchor pixels in it, ``Q`` the queue, and

.. math::
    \ell(s, t) = \frac{1}{N}\sum_i -\log
        \frac{e^{s_i\cdot t_i/\tau}}{e^{s_i\cdot t_i/\tau} + \sum_j e^{s_i\cdot Q_j/\tau}}

(one softmax per positive over the shared queue negatives; the other positive is not a
negative). The released code (github.com/haohang96/CSML) optimises, with ``(w1, w2) = (.5, .5)``:

.. math::
    \text{warm-up: } L = \tfrac13[\ell(q,k) + \ell(q_{nb},k_{nb})
        + λ\ell(q_{mix},k) + (1-λ)\ell(q_{mix},k_{nb})]

    \text{after: } L = \tfrac13[w_1\ell(q,k) + w_2\ell(q,k_{nb}) + w_1\ell(q_{nb},k_{nb})
        + w_2\ell(q_{nb},k) + λ\ell(q_{mix},k) + (1-λ)\ell(q_{mix},k_{nb})]

The three bracketed groups belong to the three queries. Groups can be left out (``q_nb`` or
``q_mix`` = ``None``, the CsMl ablations); the sum is then divided by the number of groups
present instead of 3 (a vislearn choice, so every ablation keeps the loss scale of MoCo, which
is the one-group case ``L = ℓ(q, k)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vislearn.losses.contrastive import multi_positive_info_nce

__all__ = ["cross_sample_info_nce"]


def cross_sample_info_nce(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    temperature: float = 0.2,
    q_nb: Tensor | None = None,
    k_nb: Tensor | None = None,
    q_mix: Tensor | None = None,
    lam: float | None = None,
    cross: bool = True,
    weights: Sequence[float] = (0.5, 0.5),
) -> Tensor:
    """CsMl's multi-positive loss (module docstring), built on ``multi_positive_info_nce``.

    Args:
        q, k: ``[N, D]`` anchor query (online) and key (momentum encoder).
        queue: ``[K, D]`` unit-row negatives (detached inside).
        temperature: ``τ``.
        q_nb, k_nb: neighbour query and key; ``q_nb`` enables the neighbour group.
        q_mix, lam: query of the CutMix view and its kept anchor fraction ``λ``.
        cross: ``False`` during the warm-up: no cross terms ``ℓ(q, k_nb)``, ``ℓ(q_nb, k)``,
            and the own-key terms get weight 1 instead of ``w1``.
        weights: ``(w1, w2)`` of own-key and cross terms after the warm-up.

    Returns:
        Scalar loss ``(1/G) Σ_groups Σ_terms w · ℓ`` with ``G`` the number of groups.
    """
    if (q_nb is not None or q_mix is not None) and k_nb is None:
        raise ValueError("the neighbour and mix groups need the neighbour key k_nb")
    if q_mix is not None and (lam is None or not 0.0 <= lam <= 1.0):
        raise ValueError(f"q_mix needs lam in [0, 1], got {lam}")
    if k_nb is None:  # no neighbour at all: the anchor group alone is MoCo's ℓ(q, k)
        cross, k_nb = False, k
    w_own, w_cross = (float(weights[0]), float(weights[1])) if cross else (1.0, 0.0)
    # one row per group: (query, first positive, second positive, their weights)
    rows = [(q, k, k_nb, w_own, w_cross)]
    if q_nb is not None:
        rows.append((q_nb, k_nb, k, w_own, w_cross))
    if q_mix is not None:
        rows.append((q_mix, k, k_nb, float(lam), 1.0 - float(lam)))
    queries, pos0, pos1, w0, w1 = zip(*rows, strict=True)
    n = q.shape[0]
    groups = len(queries)
    weight = torch.tensor([w0, w1], dtype=q.dtype, device=q.device).repeat_interleave(n, dim=1)
    positives = torch.stack([torch.cat(pos0), torch.cat(pos1)])
    mean = multi_positive_info_nce(torch.cat(queries), positives, queue, temperature, weight)
    # multi_positive_info_nce returns Σ w ℓ / Σ w; the release divides Σ w ℓ / N by 3 instead
    return mean * weight.sum() / (n * groups)
