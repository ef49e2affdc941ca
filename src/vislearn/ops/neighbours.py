"""Exact k-nearest-neighbour search on the training device, and kNN bags of a data set.

:func:`knn_search` is a blocked cosine search (chunked matmul + running top-k), memory
``O(query_chunk * bank_chunk)`` whatever the data set size, with no faiss requirement. On
L2-normalised features the cosine ranking equals faiss ``IndexFlatL2``'s ranking, which the
CsMl and BINGO releases use.

:func:`dataset_knn_bags` embeds a whole data set with an encoder and returns every sample's
``k`` nearest other samples ("bags", CsMl/BINGO). Under ``torch.distributed`` each rank embeds
and searches one shard and the shards are gathered, so every rank returns the same bags
(computed once, not once per rank).

:func:`kmeans` clusters features and :func:`group_bags` turns any grouping (clusters, class
labels) into bags of random same-group members: BINGO's alternative bagging rules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from vislearn.core.distributed import gather_no_grad, rank, world_size
from vislearn.ops.features import extract_features

__all__ = ["dataset_knn_bags", "group_bags", "kmeans", "knn_search"]


@torch.no_grad()
def knn_search(
    query: Tensor,
    bank: Tensor,
    k: int,
    query_index: Tensor | None = None,
    query_chunk: int = 1024,
    bank_chunk: int = 65536,
) -> tuple[Tensor, Tensor]:
    """The ``k`` most cosine-similar bank rows of every query row.

    Args:
        query: ``[Nq, D]`` features (normalised inside).
        bank: ``[Nb, D]`` features (normalised inside), on the same device.
        k: neighbours per query.
        query_index: optional ``[Nq]`` long tensor: the bank row that *is* query ``i`` (its own
            entry, excluded from its result), or ``-1`` for none.
        query_chunk, bank_chunk: block sizes of the blocked matmul.

    Returns:
        ``(similarity, index)``, both ``[Nq, k]``, sorted by decreasing similarity.
    """
    if query.dim() != 2 or bank.dim() != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(
            f"query and bank must be [N, D] with equal D, got {tuple(query.shape)} and "
            f"{tuple(bank.shape)}"
        )
    available = bank.shape[0] - (1 if query_index is not None else 0)
    if not 1 <= k <= available:
        raise ValueError(f"k must be in [1, {available}] for a bank of {bank.shape[0]}, got {k}")
    if query_index is not None and query_index.shape != (query.shape[0],):
        raise ValueError(f"query_index must have shape [{query.shape[0]}]")
    q_all = F.normalize(query.float(), dim=1)
    b_all = F.normalize(bank.float(), dim=1)
    out_sim, out_idx = [], []
    for qs in range(0, q_all.shape[0], query_chunk):
        q = q_all[qs : qs + query_chunk]
        own = query_index[qs : qs + query_chunk].to(q.device) if query_index is not None else None
        best_sim = torch.full((q.shape[0], k), -math.inf, device=q.device)
        best_idx = torch.full((q.shape[0], k), -1, dtype=torch.long, device=q.device)
        for bs in range(0, b_all.shape[0], bank_chunk):
            sim = q @ b_all[bs : bs + bank_chunk].T
            if own is not None:
                col = own - bs
                hit = (col >= 0) & (col < sim.shape[1])
                sim[hit.nonzero().squeeze(1), col[hit]] = -math.inf
            top_sim, top_idx = sim.topk(min(k, sim.shape[1]), dim=1)
            merged_sim = torch.cat([best_sim, top_sim], dim=1)
            merged_idx = torch.cat([best_idx, top_idx + bs], dim=1)
            best_sim, order = merged_sim.topk(k, dim=1)
            best_idx = merged_idx.gather(1, order)
        out_sim.append(best_sim)
        out_idx.append(best_idx)
    return torch.cat(out_sim), torch.cat(out_idx)


@torch.no_grad()
def dataset_knn_bags(
    encoder: nn.Module,
    dataset: Dataset,
    k: int,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    num_workers: int = 0,
    query_chunk: int = 1024,
    bank_chunk: int = 65536,
) -> Tensor:
    """Indices ``[N, k]`` (CPU, long) of the ``k`` nearest *other* samples of every sample.

    Features are ``encoder``'s outputs on the un-augmented images (normalised as in training,
    encoder in eval mode; :func:`~vislearn.ops.features.extract_features`), L2-normalised,
    compared by cosine similarity. Row ``i`` never contains ``i`` (an exact duplicate image at
    another index can appear).

    Distributed: rank ``r`` embeds and searches shard ``r`` of ``ceil(N / W)`` consecutive
    samples (the last shards padded with sample ``N-1``); features and results are gathered
    in rank order, so all ranks return identical bags. Every rank must call this together.
    """
    n = len(dataset)
    if n < 2:
        raise ValueError(f"kNN bags need at least 2 samples, got {n}")
    world, me = world_size(), rank()
    per = math.ceil(n / world)
    shard = [min(i, n - 1) for i in range(me * per, (me + 1) * per)]
    feats, _ = extract_features(encoder, Subset(dataset, shard), batch_size, device, num_workers)
    feats = F.normalize(feats.to(device).float(), dim=1)
    bank = gather_no_grad(feats)[:n]
    own = torch.tensor(shard, dtype=torch.long, device=feats.device)
    _, idx = knn_search(feats, bank, k, own, query_chunk, bank_chunk)
    return gather_no_grad(idx)[:n].cpu()


@torch.no_grad()
def kmeans(
    features: Tensor, num_clusters: int, iters: int = 30, seed: int = 0, chunk: int = 65536
) -> Tensor:
    """Spherical k-means of ``features`` ``[N, D]`` (L2-normalised, cosine assignment; the
    release clusters faiss-style on normalised features): cluster index ``[N]`` per row.

    Centres start by k-means++ seeding (seeded by ``seed``: each next centre drawn with
    probability proportional to its squared distance ``2 - 2 cos`` to the nearest centre so
    far); an emptied cluster is re-seeded with the row farthest from its centre.
    Deterministic given ``seed``.
    """
    n = features.shape[0]
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be in [1, {n}], got {num_clusters}")
    x = F.normalize(features.float(), dim=1)
    g = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(n, (1,), generator=g))]
    nearest = x @ x[chosen[0]]
    for _ in range(1, num_clusters):
        weight = (2 - 2 * nearest).clamp(min=0).cpu().double()
        pick = int(torch.multinomial(weight, 1, generator=g)) if weight.sum() > 0 else 0
        chosen.append(pick)
        nearest = torch.maximum(nearest, x @ x[pick])
    centres = x[chosen].clone()
    assign = torch.full((n,), -1, dtype=torch.long, device=x.device)
    for _ in range(iters):
        sims, new = [], []
        for block in x.split(chunk):
            best, idx = (block @ centres.T).max(dim=1)
            sims.append(best)
            new.append(idx)
        best, new = torch.cat(sims), torch.cat(new)
        counts = torch.bincount(new, minlength=num_clusters)
        for c in (counts == 0).nonzero().flatten().tolist():  # re-seed empty clusters
            far = int(best.argmin())
            new[far], best[far] = c, 1.0
        if torch.equal(new, assign):
            break
        assign = new
        centres = torch.zeros_like(centres).index_add_(0, assign, x)
        centres = F.normalize(centres, dim=1)
    return assign


def group_bags(groups: Tensor, k: int, seed: int = 0) -> Tensor:
    """Bags ``[N, k]`` of ``k`` members of each row's group (cluster or class), drawn
    uniformly with replacement among the *other* members (seeded). A row alone in its group
    gets itself. With BINGO's one-partner-per-epoch draw, a large ``k`` approaches a uniform
    draw over the whole group, as the paper's cluster / label bags define it."""
    groups = torch.as_tensor(groups).long().cpu()
    if groups.dim() != 1 or k < 1:
        raise ValueError(f"groups must be [N] and k >= 1, got {tuple(groups.shape)}, {k}")
    g = torch.Generator().manual_seed(seed)
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    _, counts = torch.unique_consecutive(sorted_groups, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    gid = torch.repeat_interleave(torch.arange(len(counts)), counts)  # group id per sorted row
    size, start = counts[gid], starts[gid]
    pos = torch.arange(len(groups)) - start  # each sorted row's position in its group
    # draw among the size - 1 others: an offset in [1, size - 1] from the row's own position
    offset = (
        1 + (torch.rand(len(groups), k, generator=g) * (size - 1).clamp(min=1).unsqueeze(1)).long()
    )
    offset = torch.where(size.unsqueeze(1) > 1, offset, torch.zeros_like(offset))
    members = order[start.unsqueeze(1) + (pos.unsqueeze(1) + offset) % size.unsqueeze(1)]
    bags = torch.empty_like(members)
    bags[order] = members
    return bags
