"""BINGO: bags (kNN, k-means, labels), the frozen teacher, the loss against a NumPy
transcription of both forms, static bag caching on resume, and the frozen-network loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_methods import fit, tiny_kwargs

from vislearn.core.errors import VislearnError
from vislearn.data.datasets import ArrayImageDataset
from vislearn.data.mixing import cutmix
from vislearn.models.frozen import FrozenNetwork, load_frozen, mlp_head_from_state
from vislearn.models.heads import MLPHead
from vislearn.ops.neighbours import group_bags, kmeans
from vislearn.tasks.ssl.methods import build_method

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def teacher(tiny_evaluator) -> str:
    return str(tiny_evaluator["ckpt"])


def _bingo(teacher: str, **kw):
    torch.manual_seed(0)
    return build_method("bingo", **tiny_kwargs("bingo", teacher=teacher, **kw))


# ---- bags ----------------------------------------------------------------------------------
def test_knn_bags_find_planted_near_duplicates(teacher):
    """Twenty random images, each planted twice with a 1-grey-level perturbation: in the
    teacher's space every image's nearest other sample is its planted twin."""
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (20, 1, 28, 28), generator=g)
    twin = (base + torch.randint(-1, 2, base.shape, generator=g)).clamp(0, 255)
    images = torch.cat([base, twin]).to(torch.uint8)
    ds = ArrayImageDataset(images, torch.zeros(40, dtype=torch.long))
    bags = _bingo(teacher, bag_k=1).compute_bags(ds)
    assert bags.shape == (40, 1)
    assert torch.equal(bags[:, 0], torch.cat([torch.arange(20, 40), torch.arange(20)]))


def test_group_bags_draw_other_members_of_the_same_group():
    groups = torch.tensor([0, 1, 0, 2, 1, 0, 3, 0])
    bags = group_bags(groups, 16, seed=3)
    assert bags.shape == (8, 16)
    assert (groups[bags] == groups.unsqueeze(1)).all()
    for i in range(8):
        if (groups == groups[i]).sum() > 1:
            assert (bags[i] != i).all()
            others = set(torch.nonzero(groups == groups[i]).flatten().tolist()) - {i}
            assert set(bags[i].tolist()) == others  # 16 draws reach every other member
        else:
            assert (bags[i] == i).all()  # alone in its group: itself
    assert torch.equal(bags, group_bags(groups, 16, seed=3))


def test_kmeans_recovers_planted_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=1) * 10
    truth = torch.arange(4).repeat_interleave(30)
    x = centres[truth] + torch.randn(120, 16, generator=g)
    assign = kmeans(x, 4, seed=1)
    # the same partition up to cluster numbering
    pairs = {(int(t), int(a)) for t, a in zip(truth, assign, strict=True)}
    assert len(pairs) == 4 and len({a for _, a in pairs}) == 4


def test_label_and_kmeans_bag_sources(teacher, tmp_path):
    for source in ("labels", "kmeans"):
        model, trainer = fit(
            "bingo", tmp_path / source, teacher=teacher, bag_source=source, bag_clusters=10
        )
        assert trainer.global_step == 2
        if source == "labels":
            assert float(trainer.callback_metrics["train/bag_purity"]) == 1.0


# ---- the frozen teacher --------------------------------------------------------------------
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_teacher_never_changes_during_training(teacher, tmp_path, bn_mode):
    torch.manual_seed(0)
    model = build_method("bingo", **tiny_kwargs("bingo", teacher=teacher, teacher_bn_mode=bn_mode))
    params = {k: v.clone() for k, v in model.teacher.named_parameters()}
    buffers = {k: v.clone() for k, v in model.teacher.named_buffers()}
    student = {k: v.clone() for k, v in model.backbone.named_parameters()}
    model, trainer = fit("bingo", tmp_path, model=model)
    assert trainer.global_step == 2
    assert all(not p.requires_grad for p in model.teacher.parameters())
    for k, v in model.teacher.named_parameters():
        assert torch.equal(v, params[k]), k
    moved = [k for k, v in model.teacher.named_buffers() if not torch.equal(v, buffers[k])]
    # eval mode: a fixed function; train mode: batch statistics, running stats drift (release)
    assert (moved == []) == (bn_mode == "eval")
    assert model.teacher.training == (bn_mode == "train")
    assert any(not torch.equal(v, student[k]) for k, v in model.backbone.named_parameters())


def test_bingo_needs_a_teacher_and_valid_options(teacher):
    with pytest.raises(VislearnError, match="teacher"):
        build_method("bingo", **tiny_kwargs("bingo"))
    with pytest.raises(VislearnError, match="bag_source"):
        _bingo(teacher, bag_source="nope")
    with pytest.raises(VislearnError, match="not found"):
        _bingo("/no/such/teacher.ckpt")


def test_load_frozen_rebuilds_the_projection_head(teacher, tiny_evaluator):
    net = load_frozen(teacher, head="projector")
    state = torch.load(teacher, map_location="cpu", weights_only=True)["state_dict"]
    ref = state["momentum_projector.net.0.weight"]  # the EMA copy is preferred
    first = next(m for m in net.head.modules() if isinstance(m, torch.nn.Linear))
    assert torch.equal(first.weight, ref)
    assert net.out_dim == 16 and not net.training
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    net(x).sum().backward()  # gradients reach the input, never the weights
    assert x.grad is not None and all(p.grad is None for p in net.parameters())
    with pytest.raises(VislearnError, match="no projector head"):
        load_frozen(tiny_evaluator["safetensors"], head="projector")
    assert isinstance(load_frozen(tiny_evaluator["safetensors"]), FrozenNetwork)


@pytest.mark.parametrize("kw", [{}, {"batch_norm": False}, {"num_layers": 3, "last_bn": True}])
def test_mlp_head_from_state_round_trips(kw):
    head = MLPHead(8, 12, 5, **kw)
    state = {f"projector.{k}": v for k, v in head.state_dict().items()}
    rebuilt = mlp_head_from_state(state, "projector.")
    head.eval(), rebuilt.eval()
    x = torch.randn(3, 8)
    assert torch.equal(head(x), rebuilt(x))


# ---- the loss --------------------------------------------------------------------------------
def _np_nce(q: np.ndarray, k: np.ndarray, queue: np.ndarray, tau: float) -> float:
    """MoCo InfoNCE, transcribed: -log e^{q·k/τ} / (e^{q·k/τ} + Σ_j e^{q·n_j/τ}), batch mean."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    pos = (q * k).sum(1) / tau
    logits = np.concatenate([pos[:, None], q @ queue.T / tau], axis=1)
    m = logits.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits - m).sum(1)) + m[:, 0] - pos))


@pytest.mark.parametrize(("form", "cross"), [("paper", False), ("code", False), ("code", True)])
def test_bingo_loss_matches_numpy(teacher, form, cross):
    n, tau = 6, 0.2
    model = _bingo(
        teacher, loss_form=form, cross_warmup_epochs=-1 if cross else 10, temperature=tau
    ).train()
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(2 * n, 1, 28, 28, generator=g) for _ in range(2)]
    queue = model.queue.negatives.numpy().astype(np.float64)
    rng = model.augment.generator.get_state()
    out = model.ssl_step(views, torch.zeros(n, dtype=torch.long))

    with torch.no_grad():  # the same outputs again, group by group
        s_a, s_p = (model._student(v)[1].double().numpy() for v in (views[0][:n], views[0][n:]))
        t_a, t_p = (model.teacher(v).double().numpy() for v in (views[1][:n], views[1][n:]))
        model.augment.generator.set_state(rng)
        mixed, lam = cutmix(views[0][:n], views[0][n:], 2.0, model.augment.generator)
        s_m = model._student(mixed)[1].double().numpy()

    def ell(q, k):
        return _np_nce(q, k, queue, tau)

    if form == "paper":
        expected = ell(s_a, t_a) + ell(s_p, t_a)
    elif not cross:
        expected = (
            ell(s_a, t_a) + ell(s_p, t_p) + lam * ell(s_m, t_a) + (1 - lam) * ell(s_m, t_p)
        ) / 3
    else:
        expected = (
            0.5 * (ell(s_a, t_a) + ell(s_a, t_p) + ell(s_p, t_p) + ell(s_p, t_a))
            + lam * ell(s_m, t_a)
            + (1 - lam) * ell(s_m, t_p)
        ) / 3
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5)
    # only the anchors' teacher embeddings enter the queue
    t_a_unit = t_a / np.linalg.norm(t_a, axis=1, keepdims=True)
    np.testing.assert_allclose(model.queue.queue[:n].double().numpy(), t_a_unit, atol=1e-6)


def test_static_bags_are_computed_once_and_reloaded_on_resume(teacher, tmp_path):
    a, _ = fit("bingo", tmp_path, 2, teacher=teacher)
    assert a.bag_events == [("computed", 0)]  # static: no refresh at epoch 1
    b, trainer = fit(
        "bingo",
        tmp_path,
        3,
        teacher=teacher,
        ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt"),
    )
    assert b.bag_events == [("loaded", 0)] and trainer.global_step == 6
