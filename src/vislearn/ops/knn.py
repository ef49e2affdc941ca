"""Weighted k-nearest-neighbour classification on frozen features (Wu et al., 2018).

For a query ``q`` and a bank of features ``b_j`` with labels ``y_j`` (all L2-normalised),
take the ``k`` most cosine-similar bank entries and vote with weights ``exp(s_j / T)``:
``score_c = sum_{j in topk} exp(s_j / T) [y_j = c]``; predict ``argmax_c score_c``.
Defaults ``k=200, T=0.07`` as in InstDisc / MoCo / solo-learn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores ``[Nq, num_classes]`` of every query (chunked matmul + top-k)."""
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for q in F.normalize(query.float(), dim=1).split(chunk_size):
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=q.device, dtype=weights.dtype)
        votes.scatter_add_(1, bank_labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(
    query: Tensor,
    query_labels: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    k: int = 200,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (in [0, 1]) of :func:`knn_predict`."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    pred = knn_predict(query, bank, bank_labels, num_classes, k, temperature).argmax(1)
    return (pred == query_labels).float().mean().item()
