"""Losses and the negatives queue against independent references.

References: NumPy float64 loop transcriptions of the papers' formulas, closed-form values,
and the peer library lightly (imported only here, as a reference).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vislearn.engine import MemoryQueue
from vislearn.losses import byol_loss, info_nce, multi_positive_info_nce, nt_xent

BATCHES = [1, 2, 5]
DIMS = [3, 16]
TEMPS = [0.07, 0.2, 0.5]
TOL = {torch.float32: dict(rel=1e-5, abs=1e-6), torch.float64: dict(rel=1e-10, abs=1e-12)}


# --------------------------------------------------------------------------- NumPy references


def _unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(float(np.dot(v, v)))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(_unit(a), _unit(b)))


def ref_info_nce_queue(q, k, queue, tau):
    """MoCo eq. (1): -log exp(q·k+/τ) / (exp(q·k+/τ) + Σ_j exp(q·k_j/τ)), mean over queries."""
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(_cos(q[i], k[i]) / tau)
        neg = sum(math.exp(float(np.dot(_unit(q[i]), queue[j])) / tau) for j in range(len(queue)))
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def ref_info_nce_batch(q, k, tau):
    """In-batch InfoNCE: -log exp(q_i·k_i/τ) / Σ_j exp(q_i·k_j/τ), mean over i."""
    n = q.shape[0]
    total = 0.0
    for i in range(n):
        den = sum(math.exp(_cos(q[i], k[j]) / tau) for j in range(n))
        total += -math.log(math.exp(_cos(q[i], k[i]) / tau) / den)
    return total / n


def ref_nt_xent(z1, z2, tau):
    """SimCLR Algorithm 1 with the paper's interleaved indexing (views 2k and 2k+1)."""
    n = z1.shape[0]
    z = []
    for k in range(n):
        z.append(z1[k])
        z.append(z2[k])

    def ell(i, j):
        den = sum(math.exp(_cos(z[i], z[m]) / tau) for m in range(2 * n) if m != i)
        return -math.log(math.exp(_cos(z[i], z[j]) / tau) / den)

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


def ref_multi_positive(q, positives, queue, tau, weights=None):
    """Σ_{p,i} w_{p,i} ℓ_{p,i} / Σ w, one softmax per positive over [k^p_i, queue]."""
    n_pos, n = len(positives), q.shape[0]
    w_all = np.ones((n_pos, n)) if weights is None else np.asarray(weights, dtype=np.float64)
    w_all = np.broadcast_to(w_all.reshape(n_pos, -1), (n_pos, n))
    num, den = 0.0, 0.0
    for p in range(n_pos):
        for i in range(n):
            w = float(w_all[p, i])
            pos = math.exp(_cos(q[i], positives[p][i]) / tau)
            neg = sum(math.exp(float(np.dot(_unit(q[i]), n_j)) / tau) for n_j in queue)
            num += w * -math.log(pos / (pos + neg))
            den += w
    return num / den


def ref_byol(p, z):
    """BYOL eq. (2): ||p̄ - z̄||² = 2 - 2 cos(p, z), mean over the batch."""
    return sum(2.0 - 2.0 * _cos(p[i], z[i]) for i in range(p.shape[0])) / p.shape[0]


def _rand(*shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _unit_rows(*shape, seed: int, dtype=torch.float32) -> torch.Tensor:
    return F.normalize(_rand(*shape, seed=seed, dtype=torch.float64), dim=-1).to(dtype)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# --------------------------------------------------------------------------- forward values


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", TEMPS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("n", BATCHES)
def test_info_nce_queue_matches_numpy(n, dim, tau, dtype):
    q, k = _rand(n, dim, seed=1, dtype=dtype), _rand(n, dim, seed=2, dtype=dtype)
    for size in (1, 9):
        queue = _unit_rows(size, dim, seed=3 + size, dtype=dtype)
        got = info_nce(q, k, queue, temperature=tau).item()
        want = ref_info_nce_queue(_np(q), _np(k), _np(queue), tau)
        assert got == pytest.approx(want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", TEMPS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("n", BATCHES)
def test_info_nce_in_batch_matches_numpy(n, dim, tau, dtype):
    q, k = _rand(n, dim, seed=4, dtype=dtype), _rand(n, dim, seed=5, dtype=dtype)
    got = info_nce(q, k, temperature=tau).item()
    assert got == pytest.approx(ref_info_nce_batch(_np(q), _np(k), tau), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", TEMPS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("n", BATCHES)
def test_nt_xent_matches_numpy(n, dim, tau, dtype):
    z1, z2 = _rand(n, dim, seed=6, dtype=dtype), _rand(n, dim, seed=7, dtype=dtype)
    got = nt_xent(z1, z2, temperature=tau).item()
    assert got == pytest.approx(ref_nt_xent(_np(z1), _np(z2), tau), **TOL[dtype])
    # symmetric in the two views
    assert nt_xent(z2, z1, temperature=tau).item() == pytest.approx(got, **TOL[dtype])


@pytest.mark.parametrize("n_pos", [1, 3])
@pytest.mark.parametrize("tau", TEMPS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("n", BATCHES)
def test_multi_positive_matches_numpy(n, dim, tau, n_pos):
    q = _rand(n, dim, seed=8)
    pos = [_rand(n, dim, seed=20 + p) for p in range(n_pos)]
    queue = _unit_rows(6, dim, seed=9)
    np_pos = [_np(p) for p in pos]
    got = multi_positive_info_nce(q, pos, queue, temperature=tau).item()
    want = ref_multi_positive(_np(q), np_pos, _np(queue), tau)
    assert got == pytest.approx(want, **TOL[torch.float32])
    # stacked [P, N, D] input is the same thing
    stacked = multi_positive_info_nce(q, torch.stack(pos), queue, temperature=tau).item()
    assert stacked == pytest.approx(got, rel=1e-6)
    # per-positive weights [P] and per-pair weights [P, N]
    w_p = torch.arange(1, n_pos + 1, dtype=torch.float32)
    got_w = multi_positive_info_nce(q, pos, queue, temperature=tau, weights=w_p).item()
    want_w = ref_multi_positive(_np(q), np_pos, _np(queue), tau, weights=_np(w_p))
    assert got_w == pytest.approx(want_w, **TOL[torch.float32])
    w_pn = (torch.arange(n_pos * n).reshape(n_pos, n) % 3).float()
    w_pn[0, 0] = 1.0  # positive sum
    got_pn = multi_positive_info_nce(q, pos, queue, temperature=tau, weights=w_pn).item()
    want_pn = ref_multi_positive(_np(q), np_pos, _np(queue), tau, weights=_np(w_pn))
    assert got_pn == pytest.approx(want_pn, **TOL[torch.float32])


@pytest.mark.parametrize("tau", TEMPS)
@pytest.mark.parametrize("n", BATCHES)
def test_multi_positive_with_one_positive_equals_info_nce(n, tau):
    q, k = _rand(n, 8, seed=10, dtype=torch.float64), _rand(n, 8, seed=11, dtype=torch.float64)
    queue = _unit_rows(13, 8, seed=12, dtype=torch.float64)
    single = info_nce(q, k, queue, temperature=tau)
    assert multi_positive_info_nce(q, [k], queue, tau).item() == pytest.approx(single.item())
    assert multi_positive_info_nce(q, k[None], queue, tau, weights=[2.5]).item() == pytest.approx(
        single.item()
    )


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("n", BATCHES)
def test_byol_matches_numpy(n, dim):
    p, z = _rand(n, dim, seed=13), _rand(n, dim, seed=14)
    got = byol_loss(p, z).item()
    assert got == pytest.approx(ref_byol(_np(p), _np(z)), **TOL[torch.float32])


# --------------------------------------------------------------------------- analytic values


@pytest.mark.parametrize("tau", TEMPS)
@pytest.mark.parametrize("n", BATCHES)
def test_nt_xent_identical_embeddings(n, tau):
    z = torch.ones(n, 5) * torch.tensor([1.0, -2.0, 0.5, 3.0, 1.0])
    # all 2N-1 candidates have the same similarity: loss = -log(1/(2N-1))
    assert nt_xent(z, 3 * z, temperature=tau).item() == pytest.approx(math.log(2 * n - 1), abs=1e-6)


@pytest.mark.parametrize("size", [1, 4, 7])
@pytest.mark.parametrize("tau", TEMPS)
@pytest.mark.parametrize("n", BATCHES)
def test_info_nce_orthogonal_queue(n, tau, size):
    dim = size + 1
    q = torch.zeros(n, dim, dtype=torch.float64)
    q[:, 0] = 2.0  # q = k = e0 (unnormalised on purpose)
    queue = torch.eye(dim, dtype=torch.float64)[1:]  # e1..eK, orthogonal to q
    want = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + size))
    assert info_nce(q, q.clone(), queue, temperature=tau).item() == pytest.approx(want, rel=1e-9)
    # in-batch with identical keys: N equal logits, loss = log N
    assert info_nce(q, q, temperature=tau).item() == pytest.approx(math.log(n), abs=1e-6)


def test_byol_analytic_and_scale_invariance():
    z = _rand(4, 6, seed=15)
    assert byol_loss(z, 5 * z).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(z, -z).item() == pytest.approx(4.0, rel=1e-6)
    e = torch.eye(6)
    assert byol_loss(e[:3], e[3:]).item() == pytest.approx(2.0)
    q, k = _rand(3, 6, seed=16), _rand(3, 6, seed=17)
    queue = _unit_rows(5, 6, seed=18)
    assert info_nce(7 * q, 0.1 * k, queue).item() == pytest.approx(info_nce(q, k, queue).item())
    assert nt_xent(3 * q, 0.5 * k).item() == pytest.approx(nt_xent(q, k).item())


def test_bad_inputs_raise():
    q, k = torch.randn(3, 4), torch.randn(3, 4)
    queue = F.normalize(torch.randn(5, 4), dim=1)
    with pytest.raises(ValueError):
        info_nce(q, k[:2])
    with pytest.raises(ValueError):
        info_nce(q, k, torch.randn(5, 3))
    with pytest.raises(ValueError):
        info_nce(q, k, queue, gather_keys=True)
    with pytest.raises(ValueError):
        nt_xent(q, k, temperature=0.0)
    with pytest.raises(ValueError):
        nt_xent(q[0], k[0])
    with pytest.raises(ValueError):
        multi_positive_info_nce(q, [k, k[:2]], queue)
    with pytest.raises(ValueError):
        multi_positive_info_nce(q, [k], queue, weights=[0.0])
    with pytest.raises(ValueError):
        multi_positive_info_nce(q, [k, k], queue, weights=torch.ones(2, 2))
    with pytest.raises(ValueError):
        byol_loss(q, k.T)


# --------------------------------------------------------------------------- gradients


def _gradcheck(fn, *inputs):
    ins = [t.detach().double().requires_grad_(True) for t in inputs]
    assert torch.autograd.gradcheck(fn, ins, eps=1e-6, atol=1e-6)


def test_gradcheck_all_losses():
    q, k, k2 = _rand(3, 4, seed=30), _rand(3, 4, seed=31), _rand(3, 4, seed=32)
    queue = _unit_rows(5, 4, seed=33, dtype=torch.float64)
    _gradcheck(lambda a, b: info_nce(a, b, queue, temperature=0.3), q, k)
    _gradcheck(lambda a, b: info_nce(a, b, temperature=0.3), q, k)
    _gradcheck(lambda a, b: nt_xent(a, b, temperature=0.4), q, k)
    _gradcheck(lambda a, b: nt_xent(a, b, temperature=0.4), q[:1], k[:1])
    _gradcheck(
        lambda a, b, c: multi_positive_info_nce(a, [b, c], queue, 0.3, weights=[1.0, 3.0]), q, k, k2
    )
    _gradcheck(byol_loss, q, k)


def test_queue_is_a_constant():
    q, k = _rand(3, 4, seed=34).requires_grad_(), _rand(3, 4, seed=35)
    queue = _unit_rows(5, 4, seed=36).requires_grad_()
    info_nce(q, k, queue).backward()
    multi_positive_info_nce(q, [k], queue).backward()
    assert queue.grad is None and q.grad is not None


# --------------------------------------------------------------------------- lightly as a peer


@pytest.mark.parametrize("tau", [0.1, 0.5])
@pytest.mark.parametrize("n", BATCHES)
def test_nt_xent_equals_lightly(n, tau):
    lightly_loss = pytest.importorskip("lightly.loss")
    z1 = _rand(n, 16, seed=40).requires_grad_()
    z2 = _rand(n, 16, seed=41).requires_grad_()
    ours = nt_xent(z1, z2, temperature=tau)
    peer = lightly_loss.NTXentLoss(temperature=tau)(z1, z2)
    assert ours.item() == pytest.approx(peer.item(), rel=1e-5, abs=1e-6)
    g_ours = torch.autograd.grad(ours, [z1, z2])
    g_peer = torch.autograd.grad(peer, [z1, z2])
    for a, b in zip(g_ours, g_peer, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("tau", [0.07, 0.2])
def test_info_nce_equals_lightly_memory_bank_trajectory(tau):
    """lightly's NTXentLoss(memory_bank_size=(K, D)) is MoCo's loss: q=out0, k=out1, negatives =
    the bank *before* it is updated with normalize(out1). Run 4 steps with K a multiple of the
    batch (where lightly's ring also wraps exactly) and compare loss, gradient and buffer."""
    lightly_loss = pytest.importorskip("lightly.loss")
    n, dim, size = 4, 8, 12
    torch.manual_seed(0)
    peer = lightly_loss.NTXentLoss(temperature=tau, memory_bank_size=(size, dim))
    ours = MemoryQueue(size, dim)
    with torch.no_grad():
        ours.queue.copy_(peer.memory_bank.bank)
    for step in range(4):
        q = _rand(n, dim, seed=50 + step).requires_grad_()
        k = _rand(n, dim, seed=60 + step)
        loss_ours = info_nce(q, k, ours.negatives, temperature=tau)
        (g_ours,) = torch.autograd.grad(loss_ours, q)
        loss_peer = peer(q, k)  # also enqueues k, since q requires grad
        (g_peer,) = torch.autograd.grad(loss_peer, q)
        ours.enqueue(k)
        assert loss_ours.item() == pytest.approx(loss_peer.item(), rel=1e-5)
        torch.testing.assert_close(g_ours, g_peer, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours.queue, peer.memory_bank.bank)
        assert int(ours.ptr) == int(peer.memory_bank.bank_ptr)


def test_memory_queue_vs_lightly_when_size_not_multiple_of_batch():
    """Where K % B != 0 lightly resets its pointer and drops the keys that do not fit; our ring
    wraps them to the front. All rows that both wrote agree."""
    mb = pytest.importorskip("lightly.models.modules.memory_bank")
    size, dim, n = 7, 4, 3
    torch.manual_seed(1)
    peer = mb.MemoryBankModule(size=(size, dim), feature_dim_first=False)
    ours = MemoryQueue(size, dim)
    with torch.no_grad():
        ours.queue.copy_(peer.bank)
    batches = [F.normalize(_rand(n, dim, seed=70 + s), dim=1) for s in range(3)]
    for b in batches:
        peer(b, update=True)
        ours.enqueue(b)
    keys = torch.cat(batches)  # 9 keys: 0..6 fill rows 0..6, keys 7, 8 wrap to rows 0, 1
    torch.testing.assert_close(ours.queue[2:], peer.bank[2:])
    torch.testing.assert_close(ours.queue[:2], keys[7:])
    assert int(ours.ptr) == 2


def test_byol_equals_two_plus_two_lightly_negative_cosine():
    lightly_loss = pytest.importorskip("lightly.loss")
    p, z = _rand(6, 10, seed=80), _rand(6, 10, seed=81)
    neg_cos = lightly_loss.NegativeCosineSimilarity()(p, z)
    assert byol_loss(p, z).item() == pytest.approx(2 + 2 * neg_cos.item(), rel=1e-6)


# --------------------------------------------------------------------------- MemoryQueue


def test_queue_init_unit_rows_and_seeded():
    torch.manual_seed(3)
    a = MemoryQueue(10, 5)
    torch.manual_seed(3)
    b = MemoryQueue(10, 5)
    torch.testing.assert_close(a.queue, b.queue)
    torch.testing.assert_close(a.queue.norm(dim=1), torch.ones(10))
    assert a.ptr.dtype == torch.long and a.ptr.dim() == 0 and int(a.ptr) == 0
    with pytest.raises(ValueError):
        MemoryQueue(0, 5)


def test_queue_ring_wraps_when_batch_does_not_divide_size():
    size, dim, n = 7, 3, 3
    mq = MemoryQueue(size, dim)
    expected = mq.queue.clone()
    pos = 0
    for step in range(5):
        keys = _rand(n, dim, seed=90 + step) * 10
        mq.enqueue(keys)
        for t in range(n):  # the plain ring-buffer model
            expected[pos] = F.normalize(keys[t], dim=0)
            pos = (pos + 1) % size
        torch.testing.assert_close(mq.queue, expected)
        assert int(mq.ptr) == pos
    assert pos == 15 % size


def test_queue_keeps_newest_when_more_keys_than_size():
    mq = MemoryQueue(4, 3)
    first = _rand(1, 3, seed=100)
    mq.enqueue(first)
    keys = _rand(6, 3, seed=101)
    mq.enqueue(keys)
    newest = F.normalize(keys[2:], dim=1)
    # rows 1, 2, 3, 0 hold keys 2..5; the old key and keys 0, 1 are gone
    torch.testing.assert_close(mq.queue[[1, 2, 3, 0]], newest)
    assert int(mq.ptr) == 1


def test_queue_normalises_detaches_and_casts():
    mq = MemoryQueue(5, 4)
    keys = (_rand(3, 4, seed=102, dtype=torch.float64) * 50).requires_grad_()
    mq.enqueue(keys)
    assert mq.queue.dtype == torch.float32 and not mq.queue.requires_grad
    torch.testing.assert_close(mq.queue[:3].norm(dim=1), torch.ones(3))
    torch.testing.assert_close(mq.queue[:3], F.normalize(keys.detach(), dim=1).float())
    with pytest.raises(ValueError):
        mq.enqueue(torch.randn(3, 5))


def test_queue_negatives_is_a_copy_so_moco_step_order_works():
    """loss -> enqueue -> backward (Lightning calls backward after training_step returns)."""
    mq = MemoryQueue(8, 4)
    q = _rand(3, 4, seed=103).requires_grad_()
    k = _rand(3, 4, seed=104)
    negatives = mq.negatives
    loss = info_nce(q, k, negatives)
    mq.enqueue(k)
    loss.backward()
    assert q.grad is not None
    assert not torch.equal(negatives, mq.queue)


def test_queue_state_dict_round_trip():
    torch.manual_seed(4)
    mq = MemoryQueue(6, 4)
    mq.enqueue(_rand(4, 4, seed=105))
    assert set(mq.state_dict()) == {"queue", "ptr"}
    buf = io.BytesIO()
    torch.save(mq.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(5)
    restored = MemoryQueue(6, 4)
    assert not torch.equal(restored.queue, mq.queue)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(restored.queue, mq.queue)
    assert int(restored.ptr) == 4
    nxt = _rand(3, 4, seed=106)
    mq.enqueue(nxt)
    restored.enqueue(nxt)
    torch.testing.assert_close(restored.queue, mq.queue)
    assert int(restored.ptr) == int(mq.ptr) == 1
