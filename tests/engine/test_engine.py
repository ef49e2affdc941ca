"""Engine pieces against hand transcriptions: parameter groups, schedules, EMA, LARS, kNN,
linear probe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vislearn.core.errors import VislearnError
from vislearn.engine import (
    LARS,
    build_optimizer,
    cosine_momentum,
    ema_update,
    momentum_copy,
    param_groups,
    warmup_cosine,
)
from vislearn.eval import knn_accuracy, knn_predict, linear_probe

pytestmark = pytest.mark.usefixtures("single_thread")


def _toy_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 3), nn.LayerNorm(3)
    )


# ---- parameter groups -----------------------------------------------------------------------
def test_param_groups_split_by_ndim():
    net = _toy_net()
    shared = nn.Linear(3, 3, bias=False)
    frozen = nn.Linear(3, 2)
    frozen.requires_grad_(False)
    groups = param_groups([net, shared, shared, frozen], 0.1, lr=0.5)
    decay, no_decay = groups
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    expected_decay = {id(net[0].weight), id(net[3].weight), id(shared.weight)}
    assert ids(decay["params"]) == expected_decay
    assert len(decay["params"]) == 3  # the shared module counted once
    assert ids(no_decay["params"]) == {
        id(p) for p in net.parameters() if p.ndim == 1
    }  # conv/linear biases, BN and LN scales and shifts
    assert all(p.ndim <= 1 for p in no_decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert no_decay["lars_exclude"] is True and "lars_exclude" not in decay
    assert decay["lr"] == no_decay["lr"] == 0.5
    # every trainable parameter exactly once, frozen ones never
    n_trainable = len({id(p) for m in (net, shared) for p in m.parameters()})
    assert len(decay["params"]) + len(no_decay["params"]) == n_trainable
    assert not ids(frozen.parameters()) & ids(decay["params"] + no_decay["params"])


def test_param_groups_without_exclusion():
    groups = param_groups([_toy_net()], 0.1, exclude_bias_norm=False)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.1


def test_build_optimizer_names():
    for name, cls in (("sgd", torch.optim.SGD), ("lars", LARS), ("adamw", torch.optim.AdamW)):
        opt = build_optimizer(name, param_groups([_toy_net()], 1e-4), lr=0.1)
        assert isinstance(opt, cls)
        assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    with pytest.raises(VislearnError, match="unknown optimizer"):
        build_optimizer("adagrad", param_groups([_toy_net()], 0.0), lr=0.1)


# ---- schedules ------------------------------------------------------------------------------
def test_warmup_cosine_values():
    total, warmup = 100, 10
    assert warmup_cosine(0, total, warmup) == pytest.approx(1 / warmup)
    assert warmup_cosine(4, total, warmup) == pytest.approx(5 / warmup)
    assert warmup_cosine(warmup, total, warmup) == pytest.approx(1.0)  # warm-up end = peak
    assert warmup_cosine(55, total, warmup) == pytest.approx(0.5)  # half-way through cosine
    assert warmup_cosine(total, total, warmup) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(total + 5, total, warmup) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(total, total, warmup, final_ratio=0.1) == pytest.approx(0.1)
    # no warm-up: starts at the peak, cosine formula in between
    assert warmup_cosine(0, total, 0) == pytest.approx(1.0)
    assert warmup_cosine(30, total, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))
    values = [warmup_cosine(s, total, warmup) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_cosine_momentum_endpoints():
    base, final, total = 0.996, 1.0, 50
    assert cosine_momentum(0, total, base, final) == pytest.approx(base)
    assert cosine_momentum(total, total, base, final) == pytest.approx(final)
    assert cosine_momentum(total // 2, total, base, final) == pytest.approx((base + final) / 2)
    assert cosine_momentum(10 * total, total, base, final) == pytest.approx(final)
    assert cosine_momentum(0, 0, 0.9, 0.95) == pytest.approx(0.9)  # degenerate total


# ---- EMA ------------------------------------------------------------------------------------
def test_momentum_copy_is_frozen_and_detached():
    online = _toy_net()
    target = momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    with torch.no_grad():
        online[0].weight.add_(1.0)
    assert not torch.equal(online[0].weight, target[0].weight)


def test_ema_update_formula_and_buffers():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    target = momentum_copy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.copy_(torch.randn_like(p))
    online.train()
    online(torch.randn(8, 4) * 2 + 1)  # moves the online running statistics
    m = 0.9
    t_before = {k: v.clone() for k, v in target.state_dict().items()}
    o_state = {k: v.clone() for k, v in online.state_dict().items()}
    ema_update(online, target, m)
    after = target.state_dict()
    for name, _ in online.named_parameters():
        expected = m * t_before[name] + (1 - m) * o_state[name]
        torch.testing.assert_close(after[name], expected)
    for name, _ in online.named_buffers():
        assert torch.equal(after[name], o_state[name]), name
    assert int(after["1.num_batches_tracked"]) == 1
    ema_update(online, target, 1.0)  # m = 1 keeps the target
    torch.testing.assert_close(target[0].weight, after["0.weight"])
    ema_update(online, target, 0.0)  # m = 0 copies the online network
    torch.testing.assert_close(target[0].weight, online[0].weight)


# ---- LARS -----------------------------------------------------------------------------------
def _np_lars(w, grads, lr, momentum, wd, eta, eps, exclude):
    """One parameter tensor through several LARS steps, transcribed with NumPy float64."""
    w = w.copy()
    buf = None
    for g in grads:
        d = g + wd * w
        if not exclude:
            w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
            trust = eta * w_norm / (g_norm + wd * w_norm + eps) if w_norm > 0 and g_norm > 0 else 1
            d = d * trust
        buf = d.copy() if buf is None else momentum * buf + d
        w = w - lr * buf
    return w


def test_lars_matches_numpy_transcription():
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(3, 4)), rng.normal(size=3)
    grads_w = [rng.normal(size=(3, 4)) for _ in range(3)]
    grads_b = [rng.normal(size=3) for _ in range(3)]
    lr, mom, wd, eta, eps = 0.3, 0.9, 0.01, 0.02, 1e-8
    w = nn.Parameter(torch.tensor(w0))
    b = nn.Parameter(torch.tensor(b0))
    zero = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))  # ||w|| = 0: trust ratio 1
    opt = LARS(
        [
            {"params": [w, zero], "weight_decay": wd},
            {"params": [b], "weight_decay": 0.0, "lars_exclude": True},
        ],
        lr=lr,
        momentum=mom,
        eta=eta,
        eps=eps,
    )
    grads_z = [rng.normal(size=(2, 2)) for _ in range(3)]
    for step, (gw, gb, gz) in enumerate(zip(grads_w, grads_b, grads_z, strict=True)):
        w.grad, b.grad, zero.grad = torch.tensor(gw), torch.tensor(gb), torch.tensor(gz)
        opt.step()
        if step == 0:  # the single-step update (no momentum history yet)
            expected = _np_lars(w0, grads_w[:1], lr, mom, wd, eta, eps, False)
            np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        w.detach().numpy(), _np_lars(w0, grads_w, lr, mom, wd, eta, eps, False), rtol=1e-12
    )
    np.testing.assert_allclose(
        b.detach().numpy(), _np_lars(b0, grads_b, lr, mom, 0.0, eta, eps, True), rtol=1e-12
    )
    np.testing.assert_allclose(
        zero.detach().numpy(),
        _np_lars(np.zeros((2, 2)), grads_z, lr, mom, wd, eta, eps, False),
        rtol=1e-12,
    )


def test_lars_excluded_group_equals_sgd_with_momentum():
    torch.manual_seed(0)
    a = nn.Linear(5, 3).double()
    b = nn.Linear(5, 3).double()
    b.load_state_dict(a.state_dict())
    lars = LARS(
        [{"params": a.parameters(), "lars_exclude": True, "weight_decay": 1e-3}],
        lr=0.1,
        momentum=0.9,
    )
    sgd = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    for _ in range(3):
        for model, opt in ((a, lars), (b, sgd)):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-14)


def test_lars_closure_and_missing_grad():
    p = nn.Parameter(torch.ones(3))
    q = nn.Parameter(torch.ones(3))  # never gets a gradient: left untouched
    opt = LARS([p, q], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(3.0)
    assert torch.equal(q, torch.ones(3))
    assert (p < 1).all()


# ---- kNN ------------------------------------------------------------------------------------
# bank on the unit circle (scaled to test the normalisation); query along +x
BANK = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]]) * 3
BANK_Y = torch.tensor([0, 1, 1, 0, 2])
QUERY = torch.tensor([[2.0, 0.0]])


def test_knn_hand_computed():
    # top-3 similarities 1.0 (class 0), 0.8 and 0.6 (class 1)
    for t in (0.1, 1.0):
        scores = knn_predict(QUERY, BANK, BANK_Y, 3, k=3, temperature=t)
        expected = torch.tensor([[math.exp(1 / t), math.exp(0.8 / t) + math.exp(0.6 / t), 0.0]])
        torch.testing.assert_close(scores, expected, rtol=1e-5, atol=0)
    # at T = 0.1 the single nearest neighbour wins; at T = 1 the two class-1 votes win
    assert knn_predict(QUERY, BANK, BANK_Y, 3, k=3, temperature=0.1).argmax(1).item() == 0
    assert knn_predict(QUERY, BANK, BANK_Y, 3, k=3, temperature=1.0).argmax(1).item() == 1
    # k larger than the bank uses all of it
    scores = knn_predict(QUERY, BANK, BANK_Y, 3, k=50, temperature=1.0)
    assert scores[0, 2].item() == pytest.approx(math.exp(-1.0), rel=1e-5)


def _np_knn(query, bank, bank_y, num_classes, k, t):
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    sim = q @ b.T
    out = np.zeros((len(q), num_classes))
    for i in range(len(q)):
        top = np.argsort(-sim[i])[:k]
        for j in top:
            out[i, bank_y[j]] += np.exp(sim[i, j] / t)
    return out


def test_knn_matches_numpy_on_random_data():
    rng = np.random.default_rng(0)
    bank, query = rng.normal(size=(300, 16)), rng.normal(size=(70, 16))
    bank_y = rng.integers(0, 5, size=300)
    expected = _np_knn(query, bank, bank_y, 5, k=20, t=0.1)
    scores = knn_predict(
        torch.tensor(query), torch.tensor(bank), torch.tensor(bank_y), 5, 20, 0.1, chunk_size=32
    )
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4)
    query_y = expected.argmax(1)
    query_y[:10] = (query_y[:10] + 1) % 5  # make 10 of 70 wrong
    acc = knn_accuracy(
        torch.tensor(query),
        torch.tensor(query_y),
        torch.tensor(bank),
        torch.tensor(bank_y),
        20,
        0.1,
    )
    assert acc == pytest.approx(60 / 70)


# ---- linear probe ---------------------------------------------------------------------------
def test_linear_probe_separable_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g) * 6

    def blobs(n):
        y = torch.arange(n) % 4
        return centres[y] + torch.randn(n, 8, generator=g), y

    xtr, ytr = blobs(400)
    xte, yte = blobs(200)
    res = linear_probe(xtr, ytr, xte, yte, epochs=10, lr=0.1, batch_size=64)
    assert res["train_top1"] >= 0.99
    assert res["test_top1"] >= 0.99
    again = linear_probe(xtr, ytr, xte, yte, epochs=10, lr=0.1, batch_size=64)
    assert again == res  # seeded


def test_last_checkpoint_is_written_every_epoch_between_validations(tmp_path):
    """A run validating every 3 epochs still leaves a resumable last.ckpt after epoch 1."""
    import lightning as L

    from vislearn.engine.trainer import build_trainer

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.lin(batch[0]).pow(2).mean()

        def validation_step(self, batch, _):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), 0.1)

    data = torch.utils.data.TensorDataset(torch.randn(8, 2))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = build_trainer(tmp_path, max_epochs=1, check_val_every_n_epoch=3, progress=False)
    trainer.fit(Tiny(), loader, loader)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
