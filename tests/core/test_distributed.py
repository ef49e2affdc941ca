"""Two gloo processes on CPU against the single-process loss of the global batch.

DDP optimises the mean of the per-rank losses, ``L = (L_0 + L_1) / W``, by back-propagating
``L_r`` on rank ``r`` and averaging *parameter* gradients. For rank ``r``'s inputs ``x_r`` the
required gradient is ``dL/dx_r = (1/W) * sum_s dL_s/dx_r``. The gather's backward sums the
gradients of all ranks for the local slice, so the local autograd on rank ``r`` yields
``sum_s dL_s/dx_r``; hence we check

    mean_r L_r == L_single(global batch)
    grad_r(x_r) / W == d L_single / d x  restricted to rank r's rows.

All ranks run once (module fixture, ``ddp_utils.run_ranks``) and write their results to files;
the tests compare them.
"""

from __future__ import annotations

import pytest
import torch

from ddp_utils import run_ranks
from vislearn.core.distributed import gather, gather_no_grad, rank, world_size
from vislearn.engine import LabelledMemoryQueue, MemoryQueue
from vislearn.engine.subspace_queue import SubspaceQueue
from vislearn.losses import info_nce, nt_xent
from vislearn.losses.semi import DistributionAlignment

WORLD = 2
N = 3  # per-rank batch
DIM = 8
TAU_NT, TAU_NCE = 0.5, 0.2


def _global_inputs() -> dict[str, torch.Tensor]:
    """The global batch, identical in every process (own generator, float64)."""
    g = torch.Generator().manual_seed(1234)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return {
        "z1": r(WORLD * N, DIM),
        "z2": r(WORLD * N, DIM),
        "q": r(WORLD * N, DIM),
        "k": r(WORLD * N, DIM),
        "queue": torch.nn.functional.normalize(r(11, DIM), dim=1),
        "w": r(WORLD * N, DIM),
        "keys1": r(WORLD * N, DIM).float(),
        "keys2": r(WORLD * N, DIM).float(),
    }


def _local(t: torch.Tensor, r: int) -> torch.Tensor:
    return t[r * N : (r + 1) * N].clone().requires_grad_(True)


def _run_rank(r: int) -> dict[str, object]:
    """One rank's results (runs inside the gloo group set up by ``run_ranks``)."""
    g = _global_inputs()
    res: dict[str, object] = {"rank": rank(), "world": world_size()}

    # gather: forward is the rank-ordered concatenation; backward sums over ranks
    x = _local(g["w"], r)
    xs = gather(x)
    ((r + 1.0) * (xs * g["w"]).sum()).backward()
    res["gather"] = (xs.detach(), x.grad)
    res["gather_no_grad"] = gather_no_grad(g["keys1"][r * N : (r + 1) * N])

    z1, z2 = _local(g["z1"], r), _local(g["z2"], r)
    loss = nt_xent(z1, z2, temperature=TAU_NT, gather_distributed=True)
    loss.backward()
    res["nt_xent"] = (loss.detach(), z1.grad, z2.grad)

    try:
        from lightly.loss import NTXentLoss
    except ImportError:
        res["nt_xent_lightly"] = None
    else:
        z1, z2 = _local(g["z1"], r), _local(g["z2"], r)
        peer = NTXentLoss(temperature=TAU_NT, gather_distributed=True)(z1, z2)
        peer.backward()
        res["nt_xent_lightly"] = (peer.detach(), z1.grad, z2.grad)

    q, k = _local(g["q"], r), _local(g["k"], r)
    loss = info_nce(q, k, temperature=TAU_NCE, gather_keys=True)
    loss.backward()
    res["info_nce_gather"] = (loss.detach(), q.grad, k.grad)

    q, k = _local(g["q"], r), _local(g["k"], r)
    loss = info_nce(q, k, g["queue"], temperature=TAU_NCE)
    loss.backward()
    res["info_nce_queue"] = (loss.detach(), q.grad, k.grad)

    torch.manual_seed(0)  # same initial buffer on every rank
    mq = MemoryQueue(7, DIM)  # 7 is not a multiple of the global batch of 6
    for name in ("keys1", "keys2"):
        mq.enqueue(g[name][r * N : (r + 1) * N])
    res["queue"] = (mq.queue.clone(), int(mq.ptr))

    torch.manual_seed(0)
    sq = SubspaceQueue(5, 2, DIM)  # KSCL's queue of bases: whole entries, rank order
    sq.enqueue(_bases(g)[r * N : (r + 1) * N])
    res["subspace_queue"] = sq.bases

    torch.manual_seed(0)
    lq = LabelledMemoryQueue(7, DIM)  # SsCL's queue: classes and flags travel with the keys
    rows = slice(r * N, (r + 1) * N)
    lq.enqueue(g["keys1"][rows], _classes()[rows], _classes()[rows] % 2 == 0)
    res["labelled_queue"] = (lq.queue.clone(), lq.labels.clone(), lq.is_labelled.clone())

    align = DistributionAlignment(DIM, history=4)  # the batch mean is over all ranks
    res["dist_align"] = align(g["keys2"][rows].softmax(dim=1))
    return res


def _classes() -> torch.Tensor:
    return torch.tensor([3, -1, 0, 5, 5, -1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return run_ranks(_run_rank, tmp_path_factory.mktemp("ddp"), WORLD, start_method="fork")


def _single(fn, *names):
    """Single-process loss on the global batch and its input gradients."""
    g = _global_inputs()
    ins = [g[n].clone().requires_grad_(True) for n in names]
    loss = fn(*ins)
    loss.backward()
    return loss.detach(), [t.grad for t in ins]


def _check_against_single(ranks, key, fn, *names):
    assert world_size() == 1  # the parent process is not distributed
    loss, grads = _single(fn, *names)
    local_losses = torch.stack([res[key][0] for res in ranks])
    torch.testing.assert_close(local_losses.mean(), loss, rtol=1e-10, atol=1e-12)
    for r, res in enumerate(ranks):
        for local_grad, full_grad in zip(res[key][1:], grads, strict=True):
            torch.testing.assert_close(
                local_grad / WORLD, full_grad[r * N : (r + 1) * N], rtol=1e-9, atol=1e-12
            )


def test_ranks_and_gather(ranks):
    g = _global_inputs()
    for r, res in enumerate(ranks):
        assert (res["rank"], res["world"]) == (r, WORLD)
        gathered, grad = res["gather"]
        torch.testing.assert_close(gathered, g["w"])
        # d/dx_r of sum_s (s+1) <X, w> = (1 + 2) * w[rows of r]: summed over ranks
        torch.testing.assert_close(grad, 3.0 * g["w"][r * N : (r + 1) * N])
        torch.testing.assert_close(res["gather_no_grad"], g["keys1"])


def test_nt_xent_gather_distributed_equals_global_batch(ranks):
    _check_against_single(
        ranks, "nt_xent", lambda a, b: nt_xent(a, b, temperature=TAU_NT), "z1", "z2"
    )


def test_nt_xent_gather_distributed_equals_lightly(ranks):
    if ranks[0]["nt_xent_lightly"] is None:
        pytest.skip("lightly not installed")
    for res in ranks:
        for ours, peer in zip(res["nt_xent"], res["nt_xent_lightly"], strict=True):
            torch.testing.assert_close(ours, peer, rtol=1e-9, atol=1e-12)


def test_info_nce_gather_keys_equals_global_batch(ranks):
    _check_against_single(
        ranks, "info_nce_gather", lambda a, b: info_nce(a, b, temperature=TAU_NCE), "q", "k"
    )


def test_info_nce_queue_equals_global_batch(ranks):
    queue = _global_inputs()["queue"]
    _check_against_single(
        ranks, "info_nce_queue", lambda a, b: info_nce(a, b, queue, TAU_NCE), "q", "k"
    )


def _bases(g: dict) -> torch.Tensor:
    """[B, 2, DIM] bases with row norms <= 1 built from the two key sets."""
    return 0.5 * torch.stack([g["keys1"], g["keys2"]], dim=1)


def test_subspace_queue_same_on_all_ranks_as_single_process(ranks):
    torch.manual_seed(0)
    sq = SubspaceQueue(5, 2, DIM)
    sq.enqueue(_bases(_global_inputs()))
    for res in ranks:
        torch.testing.assert_close(res["subspace_queue"], sq.bases)


def test_memory_queue_same_on_all_ranks_as_single_process(ranks):
    g = _global_inputs()
    torch.manual_seed(0)
    mq = MemoryQueue(7, DIM)
    mq.enqueue(g["keys1"])
    mq.enqueue(g["keys2"])
    for res in ranks:
        buf, ptr = res["queue"]
        torch.testing.assert_close(buf, mq.queue)
        assert ptr == int(mq.ptr) == 12 % 7


def test_labelled_queue_and_distribution_alignment_as_single_process(ranks):
    g = _global_inputs()
    torch.manual_seed(0)
    lq = LabelledMemoryQueue(7, DIM)
    lq.enqueue(g["keys1"], _classes(), _classes() % 2 == 0)
    probs = g["keys2"].softmax(dim=1)
    aligned = DistributionAlignment(DIM, history=4)(probs)
    expected = (lq.queue, lq.labels, lq.is_labelled)
    for r, res in enumerate(ranks):
        assert all(map(torch.equal, res["labelled_queue"], expected))
        torch.testing.assert_close(res["dist_align"], aligned[r * N : (r + 1) * N])
