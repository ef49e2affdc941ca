"""SsCL, the pseudolabel baseline, semi-supervised data, and the semi-supervised and few-shot
evaluation protocols: hand-computed toy cases, NumPy references, tiny end-to-end runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from vislearn.cli import main
from vislearn.core.config import load_config
from vislearn.core.errors import VislearnError
from vislearn.data import get_dataset
from vislearn.data.datamodule import ImageDataModule
from vislearn.data.semi import SemiSupervisedSampler
from vislearn.engine import LabelledMemoryQueue, build_trainer
from vislearn.eval.fewshot import few_shot_eval, mean_ci95, prototype_predict, sample_episodes
from vislearn.eval.semi import semi_supervised_finetune
from vislearn.losses import class_positive_info_nce, info_nce
from vislearn.losses.contrastive import class_positive_mask
from vislearn.losses.semi import (
    DistributionAlignment,
    calibrate,
    masked_pseudo_label_ce,
    memory_class_distribution,
    pseudo_labels,
)
from vislearn.models import create_backbone
from vislearn.tasks.ssl.methods import build_method
from vislearn.tasks.ssl.methods import sscl as sscl_module
from vislearn.tasks.ssl.run import build_datamodule, build_from_config, save_backbone

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {"backbone": "resnet_tiny", "backbone_kwargs": {"stem": "small_ds", "width": 8}}
TINY_SSCL = {**TINY, "proj_hidden_dim": 32, "proj_dim": 16, "queue_size": 64}
RECIPES = Path(__file__).resolve().parents[3] / "configs" / "fmnist_semi"


# ---- contrastive -> CE calibration ------------------------------------------------------------
def test_calibration_toy_case_by_hand():
    """Query [1, 0]; memory keys [1, 0] (class 0), [0, 1] (class 1), [1, 0] (no class); τ_s = 1.

    a = softmax([1, 0]) over the two entries with a class = [e, 1] / (e + 1), so
    q = [e/(e+1), 1/(e+1), 0]. With p = [0.2, 0.3, 0.5]: product ∝ [0.2e, 0.3, 0]; mix(0.5) =
    (p + q) / 2.
    """
    z = torch.tensor([[2.0, 0.0]])  # any norm
    memory = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    q = memory_class_distribution(z, memory, torch.tensor([0, 1, -1]), 3, temperature=1.0)
    e = math.e
    expected_q = torch.tensor([[e / (e + 1), 1 / (e + 1), 0.0]])
    torch.testing.assert_close(q, expected_q)
    p = torch.tensor([[0.2, 0.3, 0.5]])
    product = calibrate(p, q, "product", 1.0)
    torch.testing.assert_close(product, torch.tensor([[0.2 * e, 0.3, 0.0]]) / (0.2 * e + 0.3))
    torch.testing.assert_close(calibrate(p, q, "mix", 0.5), (p + expected_q) / 2)
    torch.testing.assert_close(calibrate(p, q, "product", 0.0), p)  # weight 0: no calibration
    assert calibrate(p, q, "none") is p
    assert memory_class_distribution(z, memory, torch.tensor([-1, -1, -1]), 3) is None
    assert calibrate(p, None, "product") is p  # empty memory: the prediction is kept
    with pytest.raises(ValueError, match="mix"):
        calibrate(p, q, "mix", 1.5)


def test_sscl_pseudo_targets_read_the_labelled_queue():
    """The method's calibration uses the queue's keys and classes (the same toy case)."""
    torch.manual_seed(0)
    model = build_method(
        "sscl", **{**TINY_SSCL, "proj_dim": 2, "queue_size": 3}, num_classes=3, calib_temperature=1
    )
    model.queue.enqueue(
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
        torch.tensor([0, 1, -1]),
        torch.tensor([True, False, False]),
    )
    p = torch.tensor([[0.2, 0.3, 0.5]])
    e = math.e
    out = model.pseudo_targets(p, torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.2 * e, 0.3, 0.0]]) / (0.2 * e + 0.3))
    model.hparams.calib_memory = "labelled"  # only the ground-truth entry (class 0) is left
    torch.testing.assert_close(
        model.pseudo_targets(p, torch.tensor([[1.0, 0.0]])), torch.tensor([[1.0, 0.0, 0.0]])
    )


def test_distribution_alignment_divides_by_the_running_mean():
    align = DistributionAlignment(2, history=2)
    p1 = torch.tensor([[0.9, 0.1], [0.7, 0.3]])  # mean [0.8, 0.2]
    out = align(p1)
    ref = p1 / torch.tensor([0.8, 0.2])
    torch.testing.assert_close(out, ref / ref.sum(1, keepdim=True))
    p2 = torch.tensor([[0.4, 0.6]])  # history mean [(0.8 + 0.4) / 2, (0.2 + 0.6) / 2]
    ref = p2 / torch.tensor([0.6, 0.4])
    torch.testing.assert_close(align(p2), ref / ref.sum(1, keepdim=True))


# ---- pseudo-labels ------------------------------------------------------------------------------
def test_pseudo_label_mask_by_threshold_and_masked_ce():
    probs = torch.tensor([[0.96, 0.04], [0.5, 0.5], [0.05, 0.95], [0.2, 0.8]])
    labels, mask = pseudo_labels(probs, 0.95)
    assert labels.tolist() == [0, 0, 1, 1]
    assert mask.tolist() == [True, False, True, False]  # >= threshold counts
    logits = torch.tensor([[2.0, -1.0], [0.3, 0.1], [-0.5, 0.5], [1.0, 1.0]])
    log_softmax = logits.numpy() - np.log(np.exp(logits.numpy()).sum(1, keepdims=True))
    expected = -(log_softmax[0, 0] + log_softmax[2, 1]) / 4  # mean over all rows
    assert masked_pseudo_label_ce(logits, probs, mask).item() == pytest.approx(expected, rel=1e-6)
    soft = -(probs.numpy() * log_softmax).sum(1)
    assert masked_pseudo_label_ce(logits, probs, mask, hard=False).item() == pytest.approx(
        (soft[0] + soft[2]) / 4, rel=1e-6
    )
    nothing = masked_pseudo_label_ce(logits.requires_grad_(), probs, torch.zeros(4, dtype=bool))
    assert nothing.item() == 0.0 and nothing.requires_grad


# ---- CE -> contrastive positives ---------------------------------------------------------------
def test_positive_mask_only_agreeing_classes():
    mask = class_positive_mask(torch.tensor([2, -1, 0]), torch.tensor([2, -1, 0, 2, -1]))
    assert mask.tolist() == [
        [True, False, False, True, False],
        [False, False, False, False, False],  # no class: no positive, not even other -1s
        [False, False, True, False, False],
    ]


def _numpy_class_positive_info_nce(q, k, queue, qc, kc, t, alpha=None):
    """The formula of the SsCL notes, one query at a time."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    losses = []
    for i in range(len(q)):
        logits = np.concatenate([[q[i] @ k[i]], queue @ q[i]]) / t
        log_prob = logits - np.log(np.exp(logits).sum())
        positives = [j + 1 for j in range(len(queue)) if qc[i] >= 0 and kc[j] == qc[i]]
        if alpha is None or not positives:
            terms = [log_prob[0]] + [log_prob[j] for j in positives]
            losses.append(-np.mean(terms))
        else:
            rest = np.mean([log_prob[j] for j in positives])
            losses.append(-(alpha * log_prob[0] + (1 - alpha) * rest))
    return float(np.mean(losses))


@pytest.mark.parametrize("alpha", [None, 0.3])
def test_class_positive_info_nce_matches_numpy(alpha):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    queue = F.normalize(torch.randn(10, 8, generator=g), dim=1)
    qc = torch.tensor([0, 1, -1, 2, 0, 3])  # class 3 has no queue entry
    kc = torch.tensor([0, 1, 1, -1, 2, 0, -1, 1, 2, 0])
    loss = class_positive_info_nce(q, k, queue, qc, kc, 0.2, alpha)
    ref = _numpy_class_positive_info_nce(
        q.double().numpy(), k.double().numpy(), queue.double().numpy(), qc, kc, 0.2, alpha
    )
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    # without class positives (or all weight on the own key) it is MoCo's InfoNCE
    moco = info_nce(q, k, queue, 0.2)
    none = torch.full_like(qc, -1)
    torch.testing.assert_close(class_positive_info_nce(q, k, queue, none, kc, 0.2), moco)
    torch.testing.assert_close(class_positive_info_nce(q, k, queue, qc, kc, 0.2, 1.0), moco)


def test_labelled_queue_ring_keeps_classes_with_keys():
    queue = LabelledMemoryQueue(4, 2)
    assert queue.labels.tolist() == [-1] * 4 and not queue.is_labelled.any()
    keys = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    queue.enqueue(keys, torch.tensor([5, -1, 7]), torch.tensor([True, False, False]))
    queue.enqueue(keys[:2], torch.tensor([1, 2]), torch.tensor([False, True]))  # wraps
    assert queue.labels.tolist() == [2, -1, 7, 1]
    assert queue.is_labelled.tolist() == [True, False, False, False]
    torch.testing.assert_close(queue.queue[0], torch.tensor([0.0, 1.0]))
    assert int(queue.ptr) == 1
    with pytest.raises(ValueError, match="shape"):
        queue.enqueue(keys, torch.tensor([1]), torch.tensor([True]))


class _Recorder:
    """Stands in for ``class_positive_info_nce`` in the sscl module and records its classes."""

    def __init__(self) -> None:
        self.query_classes: list[list[int]] = []

    def __call__(self, query, key, queue, query_classes, queue_classes, *args):
        self.query_classes.append(query_classes.tolist())
        return class_positive_info_nce(query, key, queue, query_classes, queue_classes, *args)


def test_sscl_step_positives_and_queue_classes_come_from_confident_predictions(monkeypatch):
    """Labelled row: its label. Unlabelled rows: the teacher's class where confident, else none.
    The unlabelled rows arrive as -1, so no hidden label can reach the method."""
    torch.manual_seed(0)
    model = build_method("sscl", **TINY_SSCL, calib_mode="none", threshold=0.9)
    probs = torch.full((4, 10), 0.001)
    probs[0, 3] = probs[1, 1] = probs[3, 7] = 0.991  # row 2 stays unconfident (uniform)
    probs[2] = 0.1
    keys = torch.randn(4, 16)
    monkeypatch.setattr(model, "teacher", lambda x: (probs, keys))
    recorder = _Recorder()
    monkeypatch.setattr(sscl_module, "class_positive_info_nce", recorder)
    views = [torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)]
    labels = torch.tensor([3, -1, -1, -1])
    out = model.ssl_step(views, labels)
    assert torch.isfinite(out["loss"])
    assert recorder.query_classes[-1] == [3, 1, -1, 7]
    assert model.queue.labels[:4].tolist() == [3, 1, -1, 7]
    assert model.queue.is_labelled[:4].tolist() == [True, False, False, False]
    assert out["mask_rate"].item() == pytest.approx(2 / 3)
    # during the warm-up: no positive besides the own key, no pseudo-label in the queue
    model.hparams.pseudo_warmup_epochs = 1
    out = model.ssl_step(views, labels)
    assert recorder.query_classes[-1] == [-1, -1, -1, -1]
    assert model.queue.labels[4:8].tolist() == [3, -1, -1, -1]
    assert out["mask_rate"].item() == 0.0 and out["loss_u"].item() == 0.0


def test_sscl_and_pseudolabel_reject_bad_settings():
    with pytest.raises(VislearnError, match="calib_mode"):
        build_method("sscl", **TINY_SSCL, calib_mode="sum")
    with pytest.raises(VislearnError, match="threshold"):
        build_method("pseudolabel", **TINY, threshold=1.5)
    with pytest.raises(VislearnError, match="no contrastive branch"):
        build_method("pseudolabel", **TINY, use_contrastive=True)
    with pytest.raises(VislearnError, match="labelled dataset"):
        build_method("sscl", **TINY_SSCL, num_classes=0)
    plain = build_method("pseudolabel", **TINY)
    assert not hasattr(plain, "queue") and not hasattr(plain, "projector")


# ---- semi-supervised training data ------------------------------------------------------------
def test_semi_datamodule_hides_labels_and_fixes_the_batch_composition():
    dm = ImageDataModule(
        batch_size=32, knn_bank_size=100, label_fraction=0.1, labelled_batch_size=8
    )
    full = dm.bank_source.labels
    visible = dm.train_set.labels
    labelled = np.flatnonzero(visible >= 0)
    assert len(labelled) == 500 and np.bincount(full[labelled]).tolist() == [50] * 10
    assert (visible[labelled] == full[labelled]).all()
    loader = dm.train_dataloader()
    assert len(loader) == 5000 // 32
    images, labels = next(iter(loader))
    assert (labels[:8] >= 0).all() and (labels[8:] == -1).all()
    assert images.shape == (32, 1, 28, 28)
    first = list(loader.sampler)
    assert first == list(loader.sampler)  # seeded
    loader.sampler.set_epoch(1)
    assert first != list(loader.sampler)


def test_datamodule_holds_excluded_images_out_of_training():
    """``exclude`` (a validation split carved from the training split) leaves the unlabelled
    stream, or the whole training set without a label fraction; the epoch counts the rest."""
    dm = ImageDataModule(batch_size=32, knn_bank_size=100, label_fraction=0.1)
    held = np.setdiff1d(np.arange(5000), dm.train_set.labelled)[::10][:300]
    semi = ImageDataModule(
        batch_size=32, knn_bank_size=100, label_fraction=0.1, labelled_batch_size=8, exclude=held
    )
    assert np.array_equal(semi.train_set.labelled, dm.train_set.labelled)  # labels unchanged
    loader = semi.train_dataloader()
    assert len(loader) == (5000 - 300) // 32
    assert not set(loader.sampler) & set(held.tolist())
    plain = ImageDataModule(batch_size=32, knn_bank_size=100, exclude=held)
    assert len(plain.train_set) == 4700 and plain.num_classes == 10
    kept = plain.train_set.indices
    assert not np.isin(kept, held).any()
    assert np.array_equal(plain.train_set.labels, plain.bank_source.labels[kept])
    assert plain.train_set[0][1] == int(plain.bank_source.labels[kept[0]])
    with pytest.raises(VislearnError, match="overlap the labelled subset"):
        ImageDataModule(batch_size=32, label_fraction=0.1, exclude=dm.train_set.labelled[:3])
    with pytest.raises(VislearnError, match="must be in"):
        ImageDataModule(batch_size=32, exclude=np.array([5000]))


def test_semi_sampler_ranks_split_the_single_process_stream():
    lab, unl = np.arange(0, 10), np.arange(10, 100)
    one = list(SemiSupervisedSampler(lab, unl, 4, 1, num_batches=6, seed=3))
    ranks = [list(SemiSupervisedSampler(lab, unl, 4, 1, 3, 3, rank=r, world=2)) for r in (0, 1)]
    batches = [one[i : i + 4] for i in range(0, 24, 4)]
    assert batches[0::2] == [ranks[0][i : i + 4] for i in range(0, 12, 4)]
    assert batches[1::2] == [ranks[1][i : i + 4] for i in range(0, 12, 4)]
    assert all(b[0] < 10 and min(b[1:]) >= 10 for b in batches)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"label_fraction": 1.5}, r"fraction must be in \(0, 1\]"),
        ({"labelled_batch_size": 8}, "needs a data.label_fraction"),
        ({"label_fraction": 0.1, "labelled_batch_size": 64}, r"must be in \[0, 32\]"),
        ({"label_fraction": 1.0, "labelled_batch_size": 8}, "every training sample is labelled"),
    ],
)
def test_label_fraction_settings_are_strict(data, match):
    cfg = load_config(None, data={"batch_size": 32, **data})
    with pytest.raises(VislearnError, match=match):
        build_datamodule(cfg)


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_semi_recipes_build(recipe):
    """Every benchmark recipe resolves and builds its method (data: the embedded subset):
    2,000 steps and 64 labelled images per step for every row."""
    cfg = load_config(recipe, ["data.dataset=fmnist-mini"])
    t, d = cfg["trainer"], cfg["data"]
    assert d["label_fraction"] in (0.01, 0.1) and t["max_epochs"] * t["limit_train_batches"] == 2000
    assert d["labelled_batch_size"] == 64
    assert d["batch_size"] == (64 if cfg["method"] == "supervised" else 256)
    dm = build_datamodule(cfg)
    model = build_from_config(cfg, dm)
    assert model.hparams.backbone_kwargs == {"stem": "small_ds", "width": 16}
    assert (dm.train_set.labels >= 0).sum() == round(cfg["data"]["label_fraction"] * 5000)


# ---- end to end -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sscl", "pseudolabel"])
def test_semi_methods_train_end_to_end(name, tmp_path):
    L.seed_everything(0, verbose=False)
    kwargs = TINY_SSCL if name == "sscl" else TINY
    model = build_method(name, **kwargs, threshold=0.5, dist_align=True, pseudo_warmup_epochs=1)
    dm = ImageDataModule(
        batch_size=32, knn_bank_size=200, label_fraction=0.1, labelled_batch_size=8
    )
    trainer = build_trainer(
        tmp_path, max_epochs=2, limit_train_batches=2, progress=False, accelerator="cpu", devices=1
    )
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert trainer.global_step == 4
    for key in ("train/loss", "train/loss_x", "train/loss_u", "val/classifier_top1"):
        assert math.isfinite(float(metrics[key])), key
    if name == "sscl":
        assert math.isfinite(float(metrics["train/loss_c"]))
        labelled = model.queue.is_labelled
        # the queue (64) holds the last two batches of 32, each with 8 labelled rows
        assert int(labelled.sum()) == 2 * 8 and (model.queue.labels[labelled] >= 0).all()


# ---- evaluation: few-shot ------------------------------------------------------------------------
def test_episode_sampler_is_disjoint_balanced_and_seeded():
    labels = np.repeat(np.arange(8), 30)
    episodes = sample_episodes(labels, ways=5, shots=3, queries=4, episodes=20, seed=1)
    assert len(episodes) == 20
    for ep in episodes:
        assert len(set(ep.classes.tolist())) == 5
        assert len(ep.support) == 15 and len(ep.query) == 20
        assert not set(ep.support.tolist()) & set(ep.query.tolist())
        assert len(set(ep.support.tolist())) == 15 and len(set(ep.query.tolist())) == 20
        assert (labels[ep.support] == ep.classes[ep.support_labels]).all()
        assert (labels[ep.query] == ep.classes[ep.query_labels]).all()
        assert np.bincount(ep.support_labels).tolist() == [3] * 5
        assert np.bincount(ep.query_labels).tolist() == [4] * 5
    again = sample_episodes(labels, 5, 3, 4, 20, seed=1)
    other = sample_episodes(labels, 5, 3, 4, 20, seed=2)
    assert all((a.support == b.support).all() for a, b in zip(episodes, again, strict=True))
    assert any((a.support != b.support).any() for a, b in zip(episodes, other, strict=True))
    with pytest.raises(VislearnError, match="need 35 images"):
        sample_episodes(labels, 5, 30, 5, 1)
    with pytest.raises(VislearnError, match="only 8 of 8 classes"):
        sample_episodes(labels, 9, 1, 5, 1)


def test_few_shot_accuracy_separable_and_random_features():
    labels = np.repeat(np.arange(10), 40)
    g = torch.Generator().manual_seed(0)
    separable = F.one_hot(torch.from_numpy(labels), 10).float() * 5
    separable = separable + 0.1 * torch.randn(separable.shape, generator=g)
    res = few_shot_eval(separable, labels, 5, 1, 15, episodes=50, seed=0)
    assert res["prototype_top1"] == 100.0 and res["logistic_top1"] == 100.0
    assert res["prototype_ci95"] == 0.0
    noise = torch.randn(400, 32, generator=g)
    chance = few_shot_eval(noise, labels, 5, 5, 15, 200, seed=0, classifiers=("prototype",))
    assert set(chance) == {"prototype_top1", "prototype_ci95"}
    assert 14.0 < chance["prototype_top1"] < 26.0  # 5-way chance: 20 %
    assert 0.0 < chance["prototype_ci95"] < 2.0


def test_prototype_is_nearest_cosine_class_mean_and_ci95():
    support = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [0.0, 2.0]])
    pred = prototype_predict(support, torch.tensor([0, 0, 1, 1]), torch.tensor([[5.0, 1.0]]), 2)
    assert pred.tolist() == [0]
    mean, ci = mean_ci95([0.5, 1.0, 0.75, 0.75])
    assert mean == 0.75 and ci == pytest.approx(1.96 * np.std([0.5, 1.0, 0.75, 0.75]) / 2)


# ---- evaluation: semi-supervised fine-tuning -------------------------------------------------
def test_semi_finetune_runs_on_tiny_data():
    torch.manual_seed(0)
    backbone = create_backbone("resnet_tiny", in_chans=1, stem="small_ds", width=8)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    train = get_dataset("fmnist-mini", "train")
    test = Subset(get_dataset("fmnist-mini", "test"), range(64))
    res = semi_supervised_finetune(backbone, train, test, 0.01, seed=3, epochs=2, batch_size=16)
    assert res["num_labelled"] == 50 and res["fraction"] == 0.01 and res["seed"] == 3
    assert res["steps"] == 2 * (50 // 16)
    assert 0.0 <= res["semi_top1"] <= 1.0
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    with pytest.raises(VislearnError, match=r"fraction must be in \(0, 1\]"):
        semi_supervised_finetune(backbone, train, test, 0.0)


# ---- CLI ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_backbone_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    backbone = create_backbone("resnet_tiny", in_chans=1, stem="small_ds", width=8)
    path = tmp_path_factory.mktemp("semi_cli") / "backbone.safetensors"
    spec = {"backbone": "resnet_tiny", "backbone_kwargs": TINY["backbone_kwargs"], "in_chans": 1}
    save_backbone(backbone, path, spec)
    return path


def _json_line(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_eval_semi_and_fewshot(tiny_backbone_file, capsys):
    ckpt = str(tiny_backbone_file)
    args = ["eval", "semi", "--ckpt", ckpt, "--fraction", "0.01", "--epochs", "1"]
    assert main([*args, "--batch-size", "16"]) == 0
    res = _json_line(capsys)
    assert res["fraction"] == 0.01 and res["seed"] == 0 and res["num_labelled"] == 50
    assert 0.0 <= res["semi_top1"] <= 100.0
    args = ["eval", "fewshot", "--ckpt", ckpt, "--ways", "5", "--shots", "1", "5"]
    assert main([*args, "--episodes", "10", "--classifier", "prototype"]) == 0
    res = _json_line(capsys)
    assert set(res["5w1s"]) == {"prototype_top1", "prototype_ci95"} and "5w5s" in res
    assert res["5w5s"]["prototype_top1"] > 30.0  # a random ResNet's features beat 20 % chance
    assert res["episodes"] == 10 and res["split"] == "test"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["semi"], "needs --fraction"),
        (["semi", "--fraction", "0"], r"--fraction must be in (0, 1], got 0.0"),
        (["semi", "--fraction", "1.5"], r"--fraction must be in (0, 1], got 1.5"),
        (["fewshot", "--shots", "500"], "need 515 images in each of 5 classes"),
        (["fewshot", "--ways", "11"], "only 10 of 10 classes"),
        (["fewshot", "--ways", "1"], "ways must be an integer >= 2"),
    ],
)
def test_cli_eval_bad_input_one_line_error(args, expected, tiny_backbone_file, capsys):
    protocol, *rest = args
    assert main(["eval", protocol, "--ckpt", str(tiny_backbone_file), *rest]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("vislearn: error: ") and expected in err


def test_cli_pretrain_with_a_label_fraction_then_fewshot_on_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "pl"
    overrides = [
        "model.backbone_kwargs={stem: small_ds, width: 8}",
        "data.batch_size=32",
        "data.knn_bank_size=200",
        "data.label_fraction=0.1",
        "data.labelled_batch_size=8",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.progress=false",
        "trainer.accelerator=cpu",
    ]
    assert main(["pretrain", "pseudolabel", *overrides, "--out", str(out)]) == 0
    cfg = load_config(out / "config.yaml")
    assert cfg["data"]["label_fraction"] == 0.1 and cfg["data"]["label_seed"] == 0
    assert (out / "backbone.safetensors").is_file()
    ckpt = str(out / "checkpoints" / "last.ckpt")
    args = ["eval", "fewshot", "--ckpt", ckpt, "--shots", "1", "--episodes", "5"]
    assert main([*args, "--classifier", "logistic"]) == 0
    res = _json_line(capsys)
    assert 20.0 < res["5w1s"]["logistic_top1"] <= 100.0
