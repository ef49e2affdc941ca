"""CsMl and KSCL: losses against NumPy transcriptions, CutMix, kNN bags, subspace numerics,
and both methods end to end (tiny settings, seconds on 2 CPU cores).

References: the released CsMl loss transcribed in float64 NumPy (Xu et al., arXiv:2012.02733;
release github.com/haohang96/CSML), the KSCL score as the projection length onto the span of
the top-L eigenvectors of the keys' Gram matrix (``numpy.linalg.eigh``), as a least-squares
projection and, for every weighting, through the SVD of the key matrix (``numpy.linalg.svd``),
the K = 1 score in closed form, symmetric KSCL as the one-directional loss computed twice with
swapped views, brute-force nearest neighbours in NumPy, and pixel counting for CutMix.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from test_methods import fit as _fit
from torch import nn

from ddp_utils import run_ranks
from vislearn.core.config import load_config
from vislearn.core.errors import VislearnError
from vislearn.data import ArrayImageDataset
from vislearn.data.augment import Normalize
from vislearn.data.mixing import beta_sample, cutmix, cutmix_box
from vislearn.data.pairs import NeighbourPairDataset, draw_partners
from vislearn.engine.bags import BagCache, module_fingerprint
from vislearn.engine.subspace_queue import SubspaceQueue
from vislearn.losses import info_nce
from vislearn.losses.cross_sample import cross_sample_info_nce
from vislearn.losses.subspace import (
    kscl_logits,
    subspace_basis,
    subspace_metric,
    subspace_score,
)
from vislearn.ops.neighbours import dataset_knn_bags, knn_search
from vislearn.tasks.ssl.methods import build_method, list_methods

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "backbone": "resnet_tiny",
    "backbone_kwargs": {"stem": "small_ds", "width": 8},
    "proj_hidden_dim": 32,
    "proj_dim": 16,
    "queue_size": 64,
}


def _unit_np(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ---- CsMl multi-positive loss vs the released formula ---------------------------------------
def ref_ell(s: np.ndarray, t: np.ndarray, queue: np.ndarray, tau: float) -> float:
    """-log exp(s·t/τ) / (exp(s·t/τ) + Σ_j exp(s·Q_j/τ)), mean over the batch (float64)."""
    s, t = _unit_np(s), _unit_np(t)
    total = 0.0
    for i in range(len(s)):
        pos = float(s[i] @ t[i]) / tau
        logits = np.concatenate([[pos], queue @ s[i] / tau])
        total += float(np.logaddexp.reduce(logits)) - pos
    return total / len(s)


def ref_csml(q, qp, qm, k, kp, queue, tau, lam, warm, w=(0.5, 0.5)) -> float:
    """The released CsMl loss (§2.2): the warm-up and the full form."""

    def ell(s, t):
        return ref_ell(s, t, queue, tau)

    if warm:
        terms = ell(q, k) + ell(qp, kp) + lam * ell(qm, k) + (1 - lam) * ell(qm, kp)
    else:
        terms = (
            w[0] * ell(q, k)
            + w[1] * ell(q, kp)
            + w[0] * ell(qp, kp)
            + w[1] * ell(qp, k)
            + lam * ell(qm, k)
            + (1 - lam) * ell(qm, kp)
        )
    return terms / 3


@pytest.mark.parametrize("warm", [True, False])
@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.8, 0.3)])
def test_cross_sample_loss_matches_released_formula(warm, weights):
    g = torch.Generator().manual_seed(1)
    n, d, tau, lam = 5, 8, 0.2, 0.37
    q, qp, qm, k, kp = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(5))
    queue = F.normalize(torch.randn(11, d, generator=g, dtype=torch.float64), dim=1)
    got = cross_sample_info_nce(q, k, queue, tau, qp, kp, qm, lam, cross=not warm, weights=weights)
    ref = ref_csml(*(x.numpy() for x in (q, qp, qm, k, kp, queue)), tau, lam, warm, weights)
    assert float(got) == pytest.approx(ref, rel=1e-10)


def test_cross_sample_loss_without_neighbours_is_moco():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    queue = F.normalize(torch.randn(9, 8, generator=g), dim=1)
    got = cross_sample_info_nce(q, k, queue, 0.2)
    assert float(got) == pytest.approx(float(info_nce(q, k, queue, 0.2)), rel=1e-6)


def test_csml_with_every_component_off_equals_asymmetric_moco():
    """All switches off, CsMl's loss is one-directional MoCo v2's."""
    off = dict(use_cross_sample=False, use_mix=False, use_multilevel=False)
    torch.manual_seed(0)
    csml = build_method("csml", **TINY, **off).double().eval()
    torch.manual_seed(0)
    moco = build_method("moco_v2", **TINY, symmetric=False).double().eval()
    g = torch.Generator().manual_seed(3)
    views = [torch.randn(6, 1, 28, 28, generator=g, dtype=torch.float64) for _ in range(2)]
    labels = torch.full((6,), -1)
    # eval mode: MoCo v2 batches both views through BN, CsMl only the views it uses
    a, b = csml.ssl_step(views, labels)["loss"], moco.ssl_step(views, labels)["loss"]
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


# ---- CutMix -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(28, 28), (12, 20)])
def test_cutmix_lambda_is_the_kept_anchor_area(shape):
    h, w = shape
    g = torch.Generator().manual_seed(0)
    anchor = torch.arange(1, 4, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 2, h, w)
    other = -anchor  # distinct constant images
    clipped = 0
    for _ in range(60):
        mixed, lam = cutmix(anchor, other, 2.0, g)
        for i in range(3):
            kept = int((mixed[i] == anchor[i]).sum()) / mixed[i].numel()
            assert kept == pytest.approx(lam, abs=1e-9)
            assert ((mixed[i] == anchor[i]) | (mixed[i] == other[i])).all()
        box = mixed[0, 0] != anchor[0, 0]
        assert torch.equal(box, mixed[2, 1] != anchor[2, 1])  # one box for the whole batch
        clipped += int(box.any() and (box[0].any() or box[-1].any() or box[:, 0].any()))
    assert clipped > 0, "no box touched the border: clipping untested"
    assert torch.equal(anchor[:, 0, 0, 0], torch.arange(1.0, 4.0))  # inputs untouched


def test_cutmix_box_and_beta_draws():
    g = torch.Generator().manual_seed(0)
    y0, y1, x0, x1 = cutmix_box(10, 10, 1.0, g)  # nothing pasted
    assert y1 == y0 and x1 == x0
    y0, y1, x0, x1 = cutmix_box(10, 16, 0.0, g)  # a whole-image box, clipped at the border
    assert 0 <= y0 < y1 <= 10 and 0 <= x0 < x1 <= 16 and (y1 - y0 < 10 or y0 == 0)
    draws = np.array([beta_sample(2.0, 2.0, g) for _ in range(4000)])
    assert draws.mean() == pytest.approx(0.5, abs=0.02)
    assert draws.var() == pytest.approx(1 / 20, abs=0.006)  # Beta(2, 2) variance
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert beta_sample(2, 2, g1) == beta_sample(2, 2, g2)


# ---- kNN bags ---------------------------------------------------------------------------------
def _planted(num_groups: int, size: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, list]:
    """Tight clusters of ``size`` points around random centres, rows shuffled."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_groups, dim, generator=g), dim=1)
    feats = centres.repeat_interleave(size, 0) + 0.01 * torch.randn(
        num_groups * size, dim, generator=g
    )
    perm = torch.randperm(len(feats), generator=g)
    group = torch.arange(num_groups).repeat_interleave(size)[perm]
    return feats[perm], group.tolist()


@pytest.mark.parametrize("chunks", [(1024, 65536), (5, 7)])
def test_knn_search_finds_planted_neighbours_and_never_self(chunks):
    feats, group = _planted(9, 4, 16)
    n = len(feats)
    sim, idx = knn_search(feats, feats, 3, torch.arange(n), *chunks)
    assert idx.shape == (n, 3)
    for i in range(n):
        assert i not in idx[i].tolist()
        assert sorted(idx[i].tolist()) == sorted(
            j for j in range(n) if group[j] == group[i] and j != i
        )
    assert (sim[:, :-1] >= sim[:, 1:]).all()
    # brute force reference in NumPy
    f = _unit_np(feats.double().numpy())
    s = f @ f.T
    np.fill_diagonal(s, -np.inf)
    ref = np.argsort(-s, axis=1)[:, :3]
    assert np.array_equal(np.sort(idx.numpy(), 1), np.sort(ref, 1))


def test_knn_search_keeps_duplicates_of_self_and_checks_k():
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    _, idx = knn_search(feats, feats, 1, torch.arange(4))
    assert idx[:, 0].tolist()[:2] == [1, 0]
    with pytest.raises(ValueError, match="k must be"):
        knn_search(feats, feats, 4, torch.arange(4))


def _toy_dataset(n: int = 23) -> ArrayImageDataset:
    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    return ArrayImageDataset(images, np.arange(n) % 3)


def _reference_bags(ds: ArrayImageDataset, k: int) -> np.ndarray:
    feats = Normalize(1)(ds.images).flatten(1).double().numpy()
    f = _unit_np(feats)
    s = f @ f.T
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1)[:, :k]


def _bags_rank(r: int) -> torch.Tensor:
    return dataset_knn_bags(nn.Flatten(), _toy_dataset(), 3, batch_size=5)


def test_dataset_knn_bags_single_process_and_two_ranks(tmp_path):
    ref = _reference_bags(_toy_dataset(), 3)
    single = dataset_knn_bags(nn.Flatten(), _toy_dataset(), 3, batch_size=5)
    assert np.array_equal(single.numpy(), ref)
    ranks = run_ranks(_bags_rank, tmp_path, 2, start_method="fork")
    for bags in ranks:
        assert torch.equal(bags, single)


def test_pairs_dataset_and_partner_draws(tmp_path):
    ds = _toy_dataset()
    bags = torch.tensor(_reference_bags(ds, 3))
    p0 = draw_partners(bags, seed=0, epoch=0)
    assert torch.equal(p0, draw_partners(bags, seed=0, epoch=0))
    assert not torch.equal(p0, draw_partners(bags, seed=0, epoch=1))
    assert all(int(p0[i]) in bags[i].tolist() for i in range(len(ds)))
    pairs = NeighbourPairDataset(ds)
    pairs.set_partners(p0)
    anchor, neighbour, label = pairs[5]
    assert torch.equal(anchor, ds.images[5]) and torch.equal(neighbour, ds.images[int(p0[5])])
    assert label == 5 % 3
    cache = BagCache(tmp_path)
    cache.save(3, bags, "fp")
    entry = cache.load(3, len(ds), 3)
    assert torch.equal(entry["bags"], bags) and entry["fingerprint"] == "fp"
    assert cache.load(3, len(ds), 4) is None and cache.load(8, len(ds), 3) is None


# ---- KSCL subspace score ------------------------------------------------------------------
def ref_score(q: np.ndarray, keys: np.ndarray, rank: int, eps: float) -> float:
    """‖P q‖ with P the projector on the top-L eigen-directions of the keys (numpy eigh)."""
    kn, qn = _unit_np(keys), _unit_np(q)
    lam, u = np.linalg.eigh(kn @ kn.T)
    top = np.argsort(-lam)[:rank]
    c = kn @ qn
    return math.sqrt(sum((u[:, t] @ c) ** 2 / max(lam[t], eps) for t in top))


@pytest.mark.parametrize("num_keys,rank", [(1, 1), (3, 3), (4, 2), (5, 1)])
def test_subspace_score_matches_numpy(num_keys, rank):
    g = torch.Generator().manual_seed(num_keys * 10 + rank)
    q = torch.randn(6, 12, generator=g, dtype=torch.float64)
    keys = torch.randn(6, num_keys, 12, generator=g, dtype=torch.float64)
    got = subspace_score(q, keys, rank, eps=1e-3)
    for i in range(6):
        assert float(got[i]) == pytest.approx(ref_score(q[i].numpy(), keys[i].numpy(), rank, 1e-3))
    if rank == num_keys:  # the full span: a least-squares projection, no eigenvectors
        for i in range(6):
            kn, qn = _unit_np(keys[i].numpy()).T, _unit_np(q[i].numpy())
            proj = kn @ np.linalg.lstsq(kn, qn, rcond=None)[0]
            assert float(got[i]) == pytest.approx(np.linalg.norm(proj), rel=1e-8)
    # invariant to the order and signs of the keys; the basis gives the same score
    flipped = keys[:, torch.randperm(num_keys, generator=g)] * -1
    torch.testing.assert_close(subspace_score(q, flipped, rank, 1e-3), got)
    basis = subspace_basis(keys, rank, 1e-3)
    via_basis = (basis @ F.normalize(q, dim=1).unsqueeze(-1)).squeeze(-1).norm(dim=1)
    torch.testing.assert_close(via_basis, got)
    assert ((got >= 0) & (got <= 1 + 1e-9)).all()


def test_k1_logits_are_absolute_moco_logits():
    g = torch.Generator().manual_seed(7)
    q, k = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    neg_keys = torch.randn(20, 16, generator=g)
    bases = subspace_basis(neg_keys.unsqueeze(1), 1, 1e-3)
    logits = kscl_logits(q, k.unsqueeze(1), bases, temperature=0.2, rank=1)
    qn, kn, nn_ = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(neg_keys, dim=1)
    moco = torch.cat([(qn * kn).sum(1, keepdim=True), qn @ nn_.T], dim=1) / 0.2
    torch.testing.assert_close(logits, moco.abs(), rtol=1e-5, atol=1e-6)


MODES = [("projection", "floor"), ("projection", "ridge"), ("eigenvalue", "floor")]


@pytest.mark.parametrize("weighting,eps_mode", MODES)
def test_k1_score_is_absolute_cosine_not_moco_logit(weighting, eps_mode):
    """K = L = 1, closed form: q = (cos θ, sin θ, 0), k = (-1, 0, 0) score |cos θ|, where
    MoCo's logit is q·k = -cos θ (the ridge mode divides by sqrt(1 + ε))."""
    theta = torch.tensor([0.0, 0.3, 1.2, math.pi / 2, 2.0, math.pi], dtype=torch.float64)
    q = torch.stack([theta.cos(), theta.sin(), torch.zeros_like(theta)], dim=1)
    keys = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64).expand(len(theta), 1, 3)
    eps = 1e-3
    got = subspace_score(q, keys, 1, eps, weighting=weighting, eps_mode=eps_mode)
    expected = theta.cos().abs() / (math.sqrt(1 + eps) if eps_mode == "ridge" else 1.0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-6)  # 1e-6: sqrt(1e-12) floor
    moco = (q * keys[:, 0]).sum(1)  # -cos θ
    assert moco[1] < 0 < got[1] and moco[-1] > 0  # the sign is lost where q·k < 0
    if eps_mode == "floor":
        torch.testing.assert_close(got, moco.abs(), rtol=1e-12, atol=1e-6)


def ref_score_svd(q, keys, rank, eps, weighting, eps_mode) -> float:
    """Weighted projection length through the SVD of the key matrix: the right singular
    vectors b_l are the principal directions, λ_l = σ_l², s² = Σ_{l≤L} w_l (b_l·q)² with
    w_l = min(1, λ_l/ε) | λ_l/(λ_l+ε) (projection, floor | ridge) or λ_l/max(λ_1, ε)."""
    kn, qn = _unit_np(keys), _unit_np(q)
    _, sigma, vt = np.linalg.svd(kn, full_matrices=False)  # descending σ
    lam = sigma**2
    if weighting == "eigenvalue":
        w = lam / (max(lam[0], eps) if eps_mode == "floor" else lam[0] + eps)
    elif eps_mode == "floor":
        w = np.minimum(1.0, lam / eps)
    else:
        w = lam / (lam + eps)
    return math.sqrt(float(np.sum(w[:rank] * (vt[:rank] @ qn) ** 2)))


@pytest.mark.parametrize("weighting,eps_mode", MODES + [("eigenvalue", "ridge")])
@pytest.mark.parametrize("num_keys,rank", [(3, 3), (4, 2), (5, 1), (3, 1)])
def test_rank_and_weighting_match_numpy_svd(num_keys, rank, weighting, eps_mode):
    g = torch.Generator().manual_seed(20 + num_keys * 10 + rank)
    q = torch.randn(6, 12, generator=g, dtype=torch.float64)
    keys = torch.randn(6, num_keys, 12, generator=g, dtype=torch.float64)
    keys[0, -1] = keys[0, 0] + 0.02 * keys[0, -1]  # one near-degenerate key set
    kw = dict(weighting=weighting, eps_mode=eps_mode)
    got = subspace_score(q, keys, rank, 1e-3, **kw)
    for i in range(6):
        ref = ref_score_svd(q[i].numpy(), keys[i].numpy(), rank, 1e-3, weighting, eps_mode)
        assert float(got[i]) == pytest.approx(ref, rel=1e-9)
    basis = subspace_basis(keys, rank, 1e-3, **kw)
    assert basis.shape == (6, rank, 12) and (basis.norm(dim=-1) <= 1 + 1e-9).all()
    via_basis = (basis @ F.normalize(q, dim=1).unsqueeze(-1)).squeeze(-1).norm(dim=1)
    torch.testing.assert_close(via_basis, got)
    squared = subspace_score(q, keys, rank, 1e-3, squared=True, **kw)
    torch.testing.assert_close(squared, got**2)


def test_near_degenerate_direction_weight_per_mode():
    """Two keys at cosine ρ = 0.99 (λ = 1 ± ρ): a query along their difference direction
    scores 1 with the default floor (full weight, λ_2 = 0.01 ≥ ε), sqrt(λ_2/(λ_2 + ε)) with
    the ridge and sqrt(λ_2/λ_1) with the eigenvalue weighting."""
    rho = 0.99
    a = math.acos(rho) / 2
    f64 = dict(dtype=torch.float64)
    keys = torch.tensor([[[math.cos(a), math.sin(a)], [math.cos(a), -math.sin(a)]]], **f64)
    q = torch.tensor([[0.0, 1.0]], **f64)
    expected = {
        ("projection", "floor"): 1.0,
        ("projection", "ridge"): math.sqrt((1 - rho) / (1 - rho + 1e-3)),
        ("eigenvalue", "floor"): math.sqrt((1 - rho) / (1 + rho)),
    }
    for (weighting, eps_mode), value in expected.items():
        got = subspace_score(q, keys, 2, 1e-3, weighting=weighting, eps_mode=eps_mode)
        assert float(got) == pytest.approx(value, rel=1e-9), (weighting, eps_mode)


def test_subspace_options_are_checked():
    keys = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="weighting"):
        subspace_basis(keys, weighting="energy")
    with pytest.raises(ValueError, match="eps_mode"):
        subspace_score(keys[:, 0], keys, eps_mode="clip")
    with pytest.raises(VislearnError, match="weighting"):
        build_method("kscl", **TINY, weighting="energy")


@pytest.mark.parametrize("weighting,eps_mode", MODES + [("eigenvalue", "ridge")])
def test_subspace_metric_backward_matches_eigh_autograd_and_gradcheck(weighting, eps_mode):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, 4, generator=g, dtype=torch.float64)
    eps = 1e-3

    def ours(x):
        m = subspace_metric(x @ x.transpose(1, 2), 2, eps, weighting, eps_mode)
        return (c.unsqueeze(1) @ m @ c.unsqueeze(-1)).sum()

    def reg(lam):
        return lam.clamp_min(eps) if eps_mode == "floor" else lam + eps

    def plain(x):  # well separated eigenvalues: torch's eigh backward is exact here
        lam, u = torch.linalg.eigh(x @ x.transpose(1, 2))
        u2, l2 = u[..., 2:], lam[..., 2:]
        h = 1 / reg(l2) if weighting == "projection" else 1 / reg(l2[..., -1:]).expand_as(l2)
        m = (u2 * h.unsqueeze(-2)) @ u2.transpose(1, 2)
        return (c.unsqueeze(1) @ m @ c.unsqueeze(-1)).sum()

    torch.testing.assert_close(ours(x), plain(x))
    (g1,) = torch.autograd.grad(ours(x), x)
    (g2,) = torch.autograd.grad(plain(x), x)
    torch.testing.assert_close(g1, g2, rtol=1e-8, atol=1e-10)
    assert torch.autograd.gradcheck(ours, (x,))
    if (weighting, eps_mode) == ("projection", "floor"):  # full rank L = K is G⁻¹
        gram = (x @ x.transpose(1, 2)).detach()
        torch.testing.assert_close(subspace_metric(gram, 4, 1e-6), torch.linalg.inv(gram))


@pytest.mark.parametrize("weighting,eps_mode", MODES)
@pytest.mark.parametrize("num_keys,rank", [(3, 1), (3, 2), (3, 3), (2, 2)])
def test_identical_keys_give_finite_scores_and_gradients(num_keys, rank, weighting, eps_mode):
    g = torch.Generator().manual_seed(9)
    q = torch.randn(4, 8, generator=g, requires_grad=True)
    base = torch.randn(4, 1, 8, generator=g)
    keys = base.repeat(1, num_keys, 1).requires_grad_(True)
    s = subspace_score(q, keys, rank, 1e-3, weighting=weighting, eps_mode=eps_mode)
    # the span of identical keys is the key itself: s = |q·k|
    ref = (F.normalize(q, dim=1) * F.normalize(base[:, 0], dim=1)).sum(1).abs()
    torch.testing.assert_close(s, ref, rtol=1e-3, atol=1e-3)
    s.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(keys.grad).all()


def test_subspace_queue_stores_bases_exactly_and_keeps_entries_aligned():
    g = torch.Generator().manual_seed(10)
    queue = SubspaceQueue(size=5, rank=2, dim=6)
    bases = [subspace_basis(torch.randn(3, 3, 6, generator=g), 2) for _ in range(3)]
    for b in bases:
        queue.enqueue(b)
    # 9 entries through a ring of 5: entries 4..8 are stored, the ring wrapped at entry 5
    stored = queue.bases
    expected = torch.cat(bases)[4:]
    slots = [(4 + i) % 5 for i in range(5)]
    torch.testing.assert_close(stored[slots], expected, rtol=1e-5, atol=1e-6)
    assert int(queue.rows.ptr) == (9 * 2) % 10


# ---- KSCL method: identical views ---------------------------------------------------------
@pytest.mark.parametrize("encoder", ["momentum", "online"])
@pytest.mark.parametrize("rank", [None, 2])
def test_kscl_identical_views_no_nan(encoder, rank):
    torch.manual_seed(0)
    model = build_method(
        "kscl", **TINY, num_keys=3, subspace_rank=rank, subspace_encoder=encoder
    ).train()
    x = torch.randn(4, 1, 28, 28)
    out = model.ssl_step([x] * 4, torch.full((4,), -1))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert torch.isfinite(model.queue.bases).all()


# ---- KSCL method: symmetric loss ---------------------------------------------------------
@pytest.mark.parametrize("encoder", ["momentum", "online"])
def test_symmetric_kscl_is_the_mean_of_both_one_directional_losses(encoder):
    """Reference: the one-directional module on views (0, 1, 2, 3) and on (1, 0, 2, 3), each
    from the same state, averaged -- loss and parameter gradients; the symmetric step enqueues
    exactly what the first one-directional step does (one entry per instance)."""
    kw = dict(**TINY, num_keys=3, subspace_encoder=encoder)
    torch.manual_seed(0)
    sym = build_method("kscl", **kw, symmetric=True).double().eval()
    asym = build_method("kscl", **kw).double().eval()
    asym.load_state_dict(sym.state_dict())
    asym_swapped = copy.deepcopy(asym)
    g = torch.Generator().manual_seed(11)
    views = [torch.randn(5, 1, 28, 28, generator=g, dtype=torch.float64) for _ in range(4)]
    labels = torch.full((5,), -1)
    swapped = [views[1], views[0], *views[2:]]
    out = sym.ssl_step(views, labels)
    a, b = asym.ssl_step(views, labels), asym_swapped.ssl_step(swapped, labels)
    ref = (a["loss"] + b["loss"]) / 2
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-12)
    assert out["loss"].item() != pytest.approx(a["loss"].item(), rel=1e-6)  # not one direction
    out["loss"].backward()
    ref.backward()
    named = dict(asym.named_parameters())
    checked = 0
    for name, p in sym.named_parameters():
        ga, gb = named[name].grad, dict(asym_swapped.named_parameters())[name].grad
        if p.grad is None:
            assert ga is None and gb is None, name
            continue
        torch.testing.assert_close(p.grad, ga + gb, rtol=1e-9, atol=1e-12)  # ref has the 1/2
        checked += 1
    assert checked > 0
    torch.testing.assert_close(sym.queue.bases, asym.queue.bases, rtol=1e-12, atol=1e-12)
    assert int(sym.queue.rows.ptr) == int(asym.queue.rows.ptr) == 5 * 3


# ---- registration and recipes ------------------------------------------------------------
RECIPES = [
    "csml",
    "csml_no_multilevel",
    "csml_no_mix",
    "kscl_k2",
    "kscl_k3",
    "kscl_k4",
    "kscl_k2_sym",
]


def test_methods_are_registered_and_recipes_build():
    assert {"csml", "kscl"} <= set(list_methods())
    for recipe in RECIPES:
        cfg = load_config(f"configs/fmnist_ssl/{recipe}.yaml")
        model = build_method(
            cfg["method"], in_chans=1, image_size=28, num_classes=10, **cfg["model"]
        )
        assert model.hparams.backbone == "resnet_tiny"
    assert load_config("configs/fmnist_ssl/csml_no_mix.yaml")["model"]["use_mix"] is False
    k4 = load_config("configs/fmnist_ssl/kscl_k4.yaml")
    assert k4["model"]["num_keys"] == 4
    k2_sym = load_config("configs/fmnist_ssl/kscl_k2_sym.yaml")["model"]
    k2 = load_config("configs/fmnist_ssl/kscl_k2.yaml")["model"]
    assert k2_sym == {**k2, "symmetric": True}  # only the loss direction differs


# ---- end to end -----------------------------------------------------------------------------
def fit(name, out, max_epochs=1, ckpt_path=None, callbacks=None, **overrides):
    """test_methods' tiny fit, one batch per epoch, 16-d embeddings."""
    overrides = {"proj_dim": 16, **overrides}
    return _fit(name, out, max_epochs, 1, ckpt_path, callbacks, **overrides)


class _Crash(Exception):
    pass


class CrashAtFirstBatchOf(Callback):
    """Kill the run at the first batch of ``epoch`` (after that epoch's bags were prepared)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Crash


def _same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.allclose(sa[k].double(), sb[k].double(), atol=1e-6)]
    assert not differ, f"state differs after resume: {differ[:6]}"


def test_csml_trains_refreshes_and_resumes_from_cached_bags(tmp_path):
    """A: 2 epochs, bags refreshed every epoch. B: the same run killed in epoch 1 after its
    refresh, resumed by a new Trainer: it must reload the epoch-1 bags and end equal to A."""
    kw = dict(bag_refresh_epochs=1, cross_warmup_epochs=0)
    a, trainer_a = fit("csml", tmp_path / "A", 2, **kw)
    assert trainer_a.global_step == 2
    assert a.bag_events == [("computed", 0), ("computed", 1)]
    metrics = trainer_a.callback_metrics
    assert math.isfinite(float(metrics["train/loss"])) and float(metrics["train/cross_terms"]) == 1
    assert 0.0 <= float(metrics["train/bag_purity"]) <= 1.0
    assert "loss_multilevel" in "".join(metrics)
    files = sorted(p.name for p in (tmp_path / "A" / "bags").iterdir())
    assert files == ["bags_epoch0000.pt", "bags_epoch0001.pt"]

    with pytest.raises(_Crash):
        fit("csml", tmp_path / "B", 2, callbacks=[CrashAtFirstBatchOf(1)], **kw)
    last = str(tmp_path / "B" / "checkpoints" / "last.ckpt")
    b, trainer_b = fit("csml", tmp_path / "B", 2, ckpt_path=last, **kw)
    assert b.bag_events == [("loaded", 1)], "the resumed run recomputed its bags"
    assert trainer_b.global_step == 2
    _same_state(a, b)
    assert module_fingerprint(a.momentum_backbone) == module_fingerprint(b.momentum_backbone)


def test_csml_resume_between_refreshes_and_rerun_reuse_the_cache(tmp_path):
    kw = dict(bag_refresh_epochs=2, use_multilevel=False)
    with pytest.raises(_Crash):
        fit("csml", tmp_path, 2, callbacks=[CrashAtFirstBatchOf(1)], **kw)
    last = str(tmp_path / "checkpoints" / "last.ckpt")
    b, _ = fit("csml", tmp_path, 2, ckpt_path=last, **kw)  # epoch 1 uses the bags of epoch 0
    assert b.bag_events == [("loaded", 0)]
    c, _ = fit("csml", tmp_path, 1, **kw)  # a fresh identical run: same encoder at epoch 0
    assert c.bag_events == [("loaded", 0)]
    d, _ = fit("csml", tmp_path, 1, backbone_kwargs={"stem": "small_ds", "width": 4}, **kw)
    assert d.bag_events == [("computed", 0)]  # another encoder: the cache is not trusted


def test_kscl_trains_end_to_end(tmp_path):
    model, trainer = fit("kscl", tmp_path, 2, num_keys=3, subspace_rank=2)
    assert trainer.global_step == 2
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert len(model.augment.views) == 4
    assert model.queue.bases.shape == (64, 2, 16)


def test_kscl_symmetric_recipe_trains_two_steps(tmp_path):
    """The kscl_k2_sym recipe's model section at tiny sizes, 2 training steps."""
    cfg = load_config("configs/fmnist_ssl/kscl_k2_sym.yaml")["model"]
    model, trainer = fit("kscl", tmp_path, 2, **{**cfg, **TINY, "proj_dim": 16, "queue_size": 100})
    assert model.hparams.symmetric and model.hparams.num_keys == 2
    assert trainer.global_step == 2
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert len(model.augment.views) == 3
    assert model.queue.bases.shape == (100, 2, 16)
    assert int(model.queue.rows.ptr) == 2 * 32 * 2  # one entry (2 rows) per image per step
