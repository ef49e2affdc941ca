"""Segmentation and MDP: data (synthetic taxonomies, VOC folders, multi-dataset concatenation,
joint augmentation), mixing, pixel-to-prototype losses against NumPy references, the two-step
prototype update against hand-computed averages (one process and 2 gloo ranks), mIoU against a
hand-computed confusion matrix, the network, and ``vislearn seg`` end to end on tiny sets."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ddp_utils import run_ranks
from vislearn.core.errors import VislearnError
from vislearn.data.mixing import (
    cross_dataset_partners,
    mix_pixel_embeddings,
    pixel_mix,
    region_mix,
)
from vislearn.data.segmentation.augment import SegmentationAugment
from vislearn.data.segmentation.datasets import (
    ArraySegmentationDataset,
    MultiDatasetSegmentation,
    fraction_subset,
)
from vislearn.data.segmentation.folder import SegmentationFolder, write_segmentation_folder
from vislearn.data.segmentation.labels import LabelSpace, downsample_labels
from vislearn.data.synthetic.backgrounds import generated_background
from vislearn.data.synthetic.scenes import SEG_TAXONOMIES, segmentation_scenes
from vislearn.data.video.davis import davis_palette
from vislearn.engine.prototypes import PrototypeBank, class_mean_stats
from vislearn.eval.segmentation import colourise, confusion_matrix, segmentation_scores
from vislearn.losses.segmentation import (
    pixel_class_sparse_coding,
    pixel_prototype_contrastive,
    soft_prototype_contrastive,
    sparse_coding_targets,
)
from vislearn.models.segmentation import SegmentationNet, load_segmentation_weights

pytestmark = pytest.mark.usefixtures("single_thread")
IGN = 255


def _bg(n: int = 2, size: int = 32) -> torch.Tensor:
    """A tiny generated background pool (no photo decoding in the fast tests)."""
    return torch.stack([generated_background(size, i) for i in range(n)])


# ----------------------------------------------------------------------------- prototypes


def _toy_batch():
    """2 images, 3 classes, d = 2. Image 0: three pixels of class 0 at (1, 0) and one of
    class 1 at (0, 1); image 1: one pixel of class 0 at (0, 1) and one ignored pixel."""
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [5.0, 5.0]])
    y = torch.tensor([0, 0, 0, 1, 0, IGN])
    img = torch.tensor([0, 0, 0, 0, 1, 1])
    return v, y, img


def test_two_step_average_matches_hand_computation():
    v, y, img = _toy_batch()
    sums, counts = class_mean_stats(v, y, img, 3, 2, IGN, "two_step")
    # class 0: per-image means (1, 0) and (0, 1), averaged once per image -> (0.5, 0.5)
    assert counts.tolist() == [2.0, 1.0, 0.0]
    assert torch.allclose(sums[0] / counts[0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.allclose(sums[1] / counts[1], torch.tensor([0.0, 1.0], dtype=torch.float64))
    # the plain pixel mean weighs image 0's three pixels: (3/4, 1/4)
    sums, counts = class_mean_stats(v, y, img, 3, 2, IGN, "pixel")
    assert counts.tolist() == [4.0, 1.0, 0.0]
    assert torch.allclose(sums[0] / counts[0], torch.tensor([0.75, 0.25], dtype=torch.float64))


def test_prototype_update_matches_hand_computed_average():
    v, y, img = _toy_batch()
    bank = PrototypeBank(3, 2, momentum=0.9)
    bank.prototypes.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]]))
    bank.initialized.fill_(True)
    present = bank.update(v, y, img, 2, IGN)
    assert present.tolist() == [True, True, False]
    # p0: normalize(0.9 (1, 0) + 0.1 (0.5, 0.5)) = (0.95, 0.05) / |.|
    n0 = math.sqrt(0.95**2 + 0.05**2)
    # p1: normalize(0.9 (1, 0) + 0.1 (0, 1)) = (0.9, 0.1) / |.|
    n1 = math.sqrt(0.9**2 + 0.1**2)
    expected = torch.tensor([[0.95 / n0, 0.05 / n0], [0.9 / n1, 0.1 / n1], [0.6, 0.8]])
    assert torch.allclose(bank.prototypes, expected, atol=1e-6)
    assert torch.allclose(bank.prototypes.norm(dim=1), torch.ones(3), atol=1e-6)


def test_prototype_first_observation_replaces_random_init():
    v, y, img = _toy_batch()
    bank = PrototypeBank(3, 2, momentum=0.99, init="first_mean", seed=3)
    before = bank.prototypes.clone()
    bank.update(v, y, img, 2, IGN)
    s = math.sqrt(0.5)
    assert torch.allclose(bank.prototypes[0], torch.tensor([s, s]), atol=1e-6)
    assert torch.allclose(bank.prototypes[1], torch.tensor([0.0, 1.0]), atol=1e-6)
    assert torch.equal(bank.prototypes[2], before[2])  # absent class untouched
    assert bank.initialized.tolist() == [True, True, False]


def _proto_rank(r: int) -> dict:
    """Rank r holds image r of the toy batch; both apply the all-reduced update."""
    v, y, img = _toy_batch()
    keep = img == r
    bank = PrototypeBank(3, 2, momentum=0.9)
    bank.prototypes.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]]))
    bank.initialized.fill_(True)
    # each rank numbers its own images from 0 and passes its own image count
    bank.update(v[keep], y[keep], torch.zeros(int(keep.sum()), dtype=torch.long), 1, IGN)
    return {"protos": bank.prototypes.clone()}


def test_prototype_update_under_ddp_equals_global_batch(tmp_path):
    v, y, img = _toy_batch()
    ref = PrototypeBank(3, 2, momentum=0.9)
    ref.prototypes.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]]))
    ref.initialized.fill_(True)
    ref.update(v, y, img, 2, IGN)
    ranks = run_ranks(_proto_rank, tmp_path, 2, start_method="fork")
    for res in ranks:
        assert torch.allclose(res["protos"], ref.prototypes, atol=1e-6)


# ----------------------------------------------------------------------------- losses


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def _emb(n: int, c: int, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    p = F.normalize(torch.randn(c, d, generator=g, dtype=torch.float64), dim=1)
    return v, p


def test_pixel_prototype_loss_equals_numpy_reference():
    v, p = _emb(7, 5)
    y = torch.tensor([0, 4, IGN, 2, 2, IGN, 1])
    tau = 0.2
    got = pixel_prototype_contrastive(v, p, y, tau, IGN)
    logp = _np_log_softmax(v.numpy() @ p.numpy().T / tau)
    keep = [i for i in range(7) if int(y[i]) != IGN]
    want = -np.mean([logp[i, int(y[i])] for i in keep])
    assert abs(float(got) - want) < 1e-10


def test_pixel_prototype_loss_ignores_ignore_index_pixels():
    v, p = _emb(6, 4)
    y = torch.tensor([1, IGN, 3, IGN, 0, 2])
    v1 = v.clone().requires_grad_(True)
    loss = pixel_prototype_contrastive(v1, p, y, 0.1, IGN)
    loss.backward()
    assert torch.all(v1.grad[y == IGN] == 0)
    assert torch.all(v1.grad[y != IGN].abs().sum(1) > 0)
    v2 = v.clone()
    v2[y == IGN] = torch.randn(2, v.shape[1], dtype=v.dtype)  # ignored pixels change freely
    assert torch.allclose(pixel_prototype_contrastive(v2, p, y, 0.1, IGN), loss)
    # nothing labelled: zero that still backpropagates
    v3 = v.clone().requires_grad_(True)
    empty = pixel_prototype_contrastive(v3, p, torch.full((6,), IGN), 0.1, IGN)
    empty.backward()
    assert empty.item() == 0.0 and torch.all(v3.grad == 0)


def test_soft_target_loss_reduces_to_hard_and_mixes_linearly():
    v, p = _emb(4, 5)
    y = torch.tensor([0, 3, 1, 4])
    hard = F.one_hot(y, 5).double()
    assert torch.allclose(
        soft_prototype_contrastive(v, p, hard, 0.1), pixel_prototype_contrastive(v, p, y, 0.1)
    )
    other = torch.tensor([2, 2, 0, 1])
    mixed = 0.3 * hard + 0.7 * F.one_hot(other, 5).double()
    want = 0.3 * pixel_prototype_contrastive(v, p, y, 0.1) + 0.7 * pixel_prototype_contrastive(
        v, p, other, 0.1
    )
    assert torch.allclose(soft_prototype_contrastive(v, p, mixed, 0.1), want)


def test_sparse_coding_targets_only_on_top_k_non_ground_truth():
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.7, 0.75, -0.2], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    y = torch.tensor([0, 5])
    w = sparse_coding_targets(sim, y, k=2, weight_temperature=0.1)
    assert set(torch.nonzero(w[0]).flatten().tolist()) == {1, 4}  # 0 is the true class
    assert set(torch.nonzero(w[1]).flatten().tolist()) == {3, 4}
    e = np.exp(np.array([0.8, 0.75]) / 0.1)
    assert torch.allclose(w[0, [1, 4]], torch.tensor(e / e.sum(), dtype=torch.float32))
    assert torch.allclose(w.sum(1), torch.ones(2))
    # candidates restrict the code (e.g. classes of other data sets): 3 and 5 only
    cand = torch.tensor([[False, False, False, True, False, True]] * 2)
    w = sparse_coding_targets(sim, y, k=2, weight_temperature=0.1, candidates=cand)
    assert set(torch.nonzero(w[0]).flatten().tolist()) == {3, 5}
    assert set(torch.nonzero(w[1]).flatten().tolist()) == {3}  # 5 is its own class
    assert torch.allclose(w.sum(1), torch.ones(2))


def test_sparse_coding_loss_equals_numpy_reference():
    v, p = _emb(5, 6, seed=2)
    y = torch.tensor([0, 1, IGN, 5, 3])
    k, tau, tau_w = 3, 0.1, 0.2
    got = pixel_class_sparse_coding(v, p, y, k, tau, tau_w, None, IGN)
    s = v.numpy() @ p.numpy().T
    losses = []
    for i in range(5):
        if int(y[i]) == IGN:
            continue
        order = [c for c in np.argsort(-s[i]) if c != int(y[i])][:k]
        w = np.exp(s[i, order] / tau_w)
        w /= w.sum()
        logp = _np_log_softmax(s[i : i + 1] / tau)[0]
        losses.append(-(w * logp[order]).sum())
    assert abs(float(got) - np.mean(losses)) < 1e-6


# ----------------------------------------------------------------------------- mixing


def _labelled_batch():
    b, h, w = 4, 8, 10
    images = torch.arange(b * 3 * h * w, dtype=torch.float32).view(b, 3, h, w)
    labels = torch.stack([torch.full((h, w), 10 * i + 1) for i in range(b)])
    labels[0, 0, 0] = IGN
    return images, labels


def test_cross_dataset_partners_pick_other_datasets():
    ds = torch.tensor([0, 0, 1, 2, 1, 0])
    partners = cross_dataset_partners(ds, torch.Generator().manual_seed(0))
    assert torch.all(ds[partners] != ds)
    single = cross_dataset_partners(torch.zeros(3, dtype=torch.long), torch.Generator())
    assert torch.all(single != torch.arange(3))  # fallback: another sample


def test_region_mix_label_map():
    images, labels = _labelled_batch()
    partners = torch.tensor([2, 3, 0, 1])
    mixed, mixed_labels, (y0, y1, x0, x1) = region_mix(
        images, labels, partners, 1.0, torch.Generator().manual_seed(5)
    )
    inside = torch.zeros(8, 10, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    assert inside.any() and not inside.all()
    for i in range(4):
        want = torch.where(inside, labels[partners[i]], labels[i])
        assert torch.equal(mixed_labels[i], want)
        assert torch.equal(mixed[i][:, inside], images[partners[i]][:, inside])
        assert torch.equal(mixed[i][:, ~inside], images[i][:, ~inside])
    assert labels[0, 0, 0] == IGN  # inputs untouched


def test_pixel_mix_labels_and_images():
    images, labels = _labelled_batch()
    partners = torch.tensor([1, 0, 3, 2])
    mixed, la, lb, lam = pixel_mix(images, labels, partners, 1.0, torch.Generator().manual_seed(1))
    assert 0.0 <= lam <= 1.0
    assert torch.equal(la, labels) and torch.equal(lb, labels[partners])
    assert torch.allclose(mixed, lam * images + (1 - lam) * images[partners])


def test_mix_pixel_embeddings_pairs_different_datasets():
    v = F.normalize(torch.randn(40, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    y = torch.tensor([0, 1, 2, 3, 4, IGN, 5, 6] * 5)
    class_group = torch.tensor([0, 0, 0, 1, 1, 2, 2])  # 7 classes in 3 data sets
    mixed, ya, yb, lam = mix_pixel_embeddings(
        v, y, class_group, 64, 1.0, torch.Generator().manual_seed(2), IGN
    )
    assert mixed.shape == (64, 4) and torch.allclose(mixed.norm(dim=1), torch.ones(64))
    assert torch.all(class_group[ya] != class_group[yb])
    assert torch.all((lam >= 0) & (lam <= 1))


# ----------------------------------------------------------------------------- metrics


def test_miou_against_hand_computed_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGN, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 3]])
    conf = confusion_matrix(pred, target, 4, IGN)
    # rows = truth, cols = prediction; the ignored pixel (truth 255) is not counted
    want = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(conf, want)
    s = segmentation_scores(conf, ["a", "b", "c", "d"])
    # IoU = tp / (row + col - tp): a 1/(2+2-1), b 2/(3+3-2), c 1/(2+1-1), d 0/(0+1-0)
    iou = [1 / 3, 2 / 4, 1 / 2, 0.0]
    assert s["iou"] == pytest.approx(dict(zip("abcd", iou, strict=True)))
    assert s["miou"] == pytest.approx(sum(iou) / 4)
    assert s["pixel_acc"] == pytest.approx(4 / 7)
    assert s["mean_acc"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)  # d has no truth
    # a class absent from truth and prediction has no IoU and is left out of the mean
    s = segmentation_scores(confusion_matrix(pred.clamp_max(2), target, 5, IGN))
    assert s["iou"]["4"] is None and s["iou"]["3"] is None
    with pytest.raises(VislearnError):
        confusion_matrix(pred, target.clamp_max(3) + 1, 4, IGN)


def test_colourise_uses_palette_and_ignore_colour():
    pal = davis_palette(256)
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0]
    rgb = colourise(torch.tensor([[0, 1], [2, IGN]]), pal[:3], IGN, (255, 255, 255))
    assert rgb.shape == (3, 2, 2) and rgb.dtype == torch.uint8
    assert rgb[:, 0, 1].tolist() == [128, 0, 0]
    assert rgb[:, 1, 0].tolist() == [0, 128, 0]
    assert rgb[:, 1, 1].tolist() == [255, 255, 255]


# ----------------------------------------------------------------------------- data


def test_downsample_labels_majority_and_purity():
    lab = torch.tensor(
        [[[1, 1, 2, 2], [1, 1, 2, 3], [IGN, IGN, 4, 5], [IGN, 0, 6, 7]]], dtype=torch.long
    )
    out = downsample_labels(lab, (2, 2), IGN, "majority", purity=0.5)
    # blocks: all 1 -> 1; 3 of 4 are 2 -> 2; ignore majority -> ignore; all different -> ignore
    assert out.tolist() == [[[1, 2], [IGN, IGN]]]
    assert downsample_labels(lab, (2, 2), IGN, "majority", purity=0.8)[0, 0, 1] == IGN


def test_synthetic_scenes_are_deterministic_and_taxonomies_agree():
    kw = dict(size=32, seed=4, name="same", num_objects=(2, 3), backgrounds=_bg())
    fine = segmentation_scenes(6, taxonomy="fine", **kw)
    again = segmentation_scenes(6, taxonomy="fine", **kw)
    coarse = segmentation_scenes(6, taxonomy="coarse", **kw)
    partial = segmentation_scenes(6, taxonomy="partial", ignore_boundary=0, **kw)
    assert torch.equal(fine.images, again.images) and torch.equal(fine.masks, again.masks)
    assert torch.equal(fine.images, coarse.images)  # same scenes, other label space
    assert (fine.masks == IGN).any() and not (partial.masks == IGN).any()
    # the coarse label of every labelled pixel is the grouping of its fine label
    fine_to_coarse = torch.tensor((0, *SEG_TAXONOMIES["coarse"][1]))
    keep = (fine.masks != IGN) & (coarse.masks != IGN)
    assert torch.equal(coarse.masks[keep].long(), fine_to_coarse[fine.masks[keep].long()])
    # partial: items of unlabelled classes are background
    partial_of_fine = torch.tensor((0, *SEG_TAXONOMIES["partial"][1]))
    unbounded = segmentation_scenes(6, taxonomy="fine", ignore_boundary=0, **kw)
    assert torch.equal(partial.masks.long(), partial_of_fine[unbounded.masks.long()])
    other = segmentation_scenes(6, taxonomy="fine", **{**kw, "name": "other"})
    assert not torch.equal(other.images, fine.images)  # each data set its own stream


def test_segmentation_folder_round_trip_and_errors(tmp_path):
    s = segmentation_scenes(3, taxonomy="coarse", size=32, seed=1, backgrounds=_bg())
    space = LabelSpace("coarse", s.classes)
    ds = ArraySegmentationDataset(s.images, s.masks, space)
    root = write_segmentation_folder(ds, tmp_path / "voc", "train")
    mask_file = root / "SegmentationClass" / "train_000000.png"
    assert Image.open(mask_file).mode == "P"
    assert np.array_equal(np.array(Image.open(mask_file)), s.masks[0].numpy())
    back = SegmentationFolder(root, "train")
    assert back.classes == s.classes and len(back) == 3
    for i in range(3):
        img, mask = back[i]
        assert torch.equal(img, s.images[i]) and torch.equal(mask, s.masks[i].long())
    small = SegmentationFolder(root, "train", image_size=16)
    img, mask = small[0]
    assert img.shape == (3, 16, 16) and mask.shape == (16, 16)
    assert set(mask.unique().tolist()) <= set(s.masks[0].unique().tolist())
    with pytest.raises(VislearnError, match="image-set list"):
        SegmentationFolder(root, "val")
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(mask_file)  # 9: not a coarse id
    with pytest.raises(VislearnError, match="not class ids"):
        back[0]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(mask_file)
    with pytest.raises(VislearnError, match="'RGB' image"):
        back[0]


def test_multi_dataset_concatenates_label_spaces():
    a = ArraySegmentationDataset(
        torch.zeros(3, 3, 4, 4, dtype=torch.uint8),
        torch.tensor([1, IGN, 0]).view(3, 1, 1).expand(3, 4, 4).clone(),
        LabelSpace("a", ("bg", "x")),
    )
    b = ArraySegmentationDataset(
        torch.ones(1, 3, 4, 4, dtype=torch.uint8),
        torch.full((1, 4, 4), 2),
        LabelSpace("b", ("bg", "y", "z")),
    )
    multi = MultiDatasetSegmentation([a, b])
    assert multi.num_classes == 5 and multi.offsets == [0, 2]
    assert multi.label_space.classes == ("a/bg", "a/x", "b/bg", "b/y", "b/z")
    assert multi.class_dataset.tolist() == [0, 0, 1, 1, 1]
    assert len(multi) == 6  # balanced: 2 data sets x 3 (the larger)
    items = [multi[i] for i in range(6)]
    assert [it[2] for it in items] == [0, 1, 0, 1, 0, 1]
    assert items[0][1].unique().tolist() == [1]
    assert items[2][1].unique().tolist() == [IGN]  # a's ignore stays ignore
    assert items[1][1].unique().tolist() == [4]  # b's class 2 -> global 2 + 2
    sub = fraction_subset(a, 0.34, seed=0)
    assert len(sub) == 1 and sub.label_space == a.label_space


def test_segmentation_augment_flip_and_identity():
    images = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 5, (2, 8, 8))
    same = SegmentationAugment((1.0, 1.0), 0.0)
    assert same(images, labels)[0] is images
    flip = SegmentationAugment((1.0, 1.0), 1.0)
    out, lab = flip(images, labels)
    assert torch.allclose(out, images.flip(-1), atol=1e-5)
    assert torch.equal(lab, labels.flip(-1))
    zoom_out = SegmentationAugment((0.5, 0.5), 0.0, seed=1)
    out, lab = zoom_out(images, labels)
    assert (lab == IGN).float().mean() >= 0.5  # three quarters lie outside the image
    assert set(lab.unique().tolist()) <= set(labels.unique().tolist()) | {IGN}


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize(("head", "stride"), [("deeplabv3", 4), ("fcn", 8)])
def test_segmentation_net_shapes_and_output_stride(head, stride):
    net = SegmentationNet(
        [3, 5], "resnet_tiny", {"stem": "small_ds", "width": 8}, 3, head, stride, 16, (1, 2)
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = net.features(x)
    assert feats.shape[-1] == 32 // stride == net.feature_size(32)
    assert net(x, 1).shape == (2, 5, 32, 32)
    with pytest.raises(VislearnError, match="output_stride"):
        SegmentationNet(3, "resnet_tiny", {"stem": "small_ds", "width": 8}, 3, head, 16)


def test_segmentation_weights_move_between_strides(tmp_path):
    from safetensors.torch import save_file

    kw = dict(backbone="resnet_tiny", backbone_kwargs={"stem": "small_ds", "width": 8})
    src = SegmentationNet(4, output_stride=8, head_channels=16, **kw)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    dst = SegmentationNet(7, output_stride=4, head_channels=16, **kw)
    assert load_segmentation_weights(dst, tmp_path / "w.safetensors") == ["backbone", "decoder"]
    assert torch.equal(dst.decoder[0].convs[0][0].weight, src.decoder[0].convs[0][0].weight)
    wide = SegmentationNet(4, output_stride=8, head_channels=32, **kw)
    with pytest.raises(VislearnError, match="decoder does not match"):
        load_segmentation_weights(wide, tmp_path / "w.safetensors")


# ----------------------------------------------------------------------------- end to end


def test_seg_cli_pretrain_finetune_eval_predict(tmp_path, capsys):
    from vislearn.tasks.seg.cli import add_seg_parser, run_seg

    parser = argparse.ArgumentParser(prog="vislearn")
    add_seg_parser(parser.add_subparsers(dest="command"))
    (tmp_path / "none").mkdir()  # an empty photo folder -> generated backgrounds (fast)
    data = f"--image-size 32 --num-train 8 --num-test 4 --cache-dir {tmp_path / 'cache'} "
    data += f"--set data.background_dir={tmp_path / 'none'}"
    train = f"{data} --batch-size 4 --steps 2 --accelerator cpu --devices 1 "
    train += "--set trainer.progress=false"
    arch = ["--set", "model.backbone_kwargs={stem: small_ds, width: 8}", "model.head_channels=16"]

    def cli(args: str, *extra: str) -> None:
        run_seg(parser.parse_args(["seg", *args.split(), *extra]))

    cli(f"pretrain --method mdp --out {tmp_path / 'pre'} {train}", *arch)
    pretrained = tmp_path / "pre" / "pretrained.safetensors"
    assert pretrained.is_file() and (tmp_path / "pre" / "checkpoints" / "last.ckpt").is_file()
    cli(f"finetune --init {pretrained} --target synthetic:coarse --fraction 0.5 "
        f"--out {tmp_path / 'ft'} {train}")  # fmt: skip
    assert (tmp_path / "ft" / "metrics.json").is_file()
    cli(f"eval --model {tmp_path / 'ft'} --dataset synthetic:coarse --json {tmp_path / 'e.json'} "
        + data)  # fmt: skip
    assert "mIoU" in capsys.readouterr().out
    cli(f"predict --model {tmp_path / 'ft'} --dataset synthetic:coarse -n 2 "
        f"--out {tmp_path / 'pred'} {data}")  # fmt: skip
    pred = np.array(Image.open(tmp_path / "pred" / "pred_0000.png"))
    assert pred.shape == (32, 32) and pred.max() < 5
    assert (tmp_path / "pred" / "grid.png").is_file()
    with pytest.raises(VislearnError, match="classes"):  # a model of coarse on fine
        cli(f"eval --model {tmp_path / 'ft'} --dataset synthetic:fine {data}")
    with pytest.raises(VislearnError, match="one data set"):
        cli(f"pretrain --method single {train}")


def test_epoch_slice_sampler_fixed_epochs_cover_the_data():
    from vislearn.data.segmentation.samplers import EpochSliceSampler

    # 10 items, 4 per rank and epoch on 2 ranks: 5 epochs = 4 full passes
    seen = []
    for epoch in range(5):
        parts = []
        for rank in range(2):
            s = EpochSliceSampler(10, 4, seed=3, rank=rank, world=2)
            s.set_epoch(epoch)
            parts.append(list(s))
            assert len(parts[-1]) == len(s) == 4
        seen += parts[0] + parts[1]
    assert np.bincount(seen, minlength=10).tolist() == [4] * 10
    small = EpochSliceSampler(3, 7, seed=0)  # a subset smaller than an epoch repeats
    assert sorted(set(small)) == [0, 1, 2] and len(list(small)) == 7


@pytest.mark.parametrize("recipe", ["pretrain_mdp", "pretrain_naive_multi", "pretrain_single"])
def test_seg_recipes_load_and_build(recipe):
    from pathlib import Path

    from vislearn.core.config import load_config
    from vislearn.tasks.seg.modules import SegFinetuneModule, SegPretrainModule
    from vislearn.tasks.seg.run import SEG_DEFAULTS

    configs = Path(__file__).resolve().parents[3] / "configs" / "seg_mdp"
    cfg = load_config(configs / f"{recipe}.yaml", defaults=SEG_DEFAULTS)
    counts = [11] if cfg["method"] == "single" else [11, 5, 6]
    assert len(cfg["data"]["datasets"]) == len(counts)
    pre = SegPretrainModule(method=cfg["method"], num_classes=counts, **cfg["model"])
    ft_cfg = load_config(configs / "finetune.yaml", defaults=SEG_DEFAULTS)
    ft = SegFinetuneModule(num_classes=6, **ft_cfg["model"])
    # fine-tuning takes the pretrained backbone and decoder unchanged
    own = ft.net.state_dict()
    for k, v in pre.net.state_dict().items():
        if k.startswith(("backbone.", "decoder.")):
            assert own[k].shape == v.shape


def test_resume_into_a_folder_of_another_segmentation_run_is_one_line(tmp_path):
    from vislearn.core.config import load_config
    from vislearn.tasks.seg.config import SEG_DEFAULTS
    from vislearn.tasks.seg.run import pretrain_seg

    (tmp_path / "none").mkdir()
    base = [
        f"out={tmp_path / 'run'}", "data.image_size=32", "data.num_train=8", "data.num_test=4",
        f"data.cache_dir={tmp_path / 'cache'}", f"data.background_dir={tmp_path / 'none'}",
        "data.batch_size=4", "trainer.max_steps=2", "trainer.accelerator=cpu",
        "trainer.devices=1", "trainer.progress=false", "model.head_channels=16",
        "data.datasets=[synthetic:fine]", "method=single",
    ]  # fmt: skip
    narrow = "model.backbone_kwargs={stem: small_ds, width: 8}"
    pretrain_seg(load_config(overrides=[*base, narrow], defaults=SEG_DEFAULTS))
    before = (tmp_path / "run" / "config.yaml").read_text()
    wide = "model.backbone_kwargs={stem: small_ds, width: 16}"
    with pytest.raises(VislearnError, match="holds another run: model.backbone_kwargs"):
        pretrain_seg(load_config(overrides=[*base, wide], defaults=SEG_DEFAULTS))
    assert (tmp_path / "run" / "config.yaml").read_text() == before


# ------------------------------------------------------- held-out set, protocols, ablations


def test_heldout_taxonomy_is_new_and_no_default_pretraining_sees_it():
    from vislearn.data.synthetic.backgrounds import DEFAULT_PHOTOS, HELDOUT_PHOTOS
    from vislearn.data.synthetic.scenes import SEG_DATASETS
    from vislearn.tasks.seg.config import SEG_DEFAULTS

    classes, mapping = SEG_TAXONOMIES["heldout"]
    groups = {c: sorted(i for i, m in enumerate(mapping) if m == c) for c in set(mapping)}
    for seen in ("fine", "coarse", "partial"):  # its grouping of the 10 items is its own
        other = SEG_TAXONOMIES[seen][1]
        seen_groups = {c: sorted(i for i, m in enumerate(other) if m == c) for c in set(other)}
        assert sorted(groups.values()) != sorted(seen_groups.values())
    assert len(classes) == 8 and set(mapping) == set(range(1, 8))  # every item labelled
    assert not set(HELDOUT_PHOTOS) & set(DEFAULT_PHOTOS)
    assert SEG_DATASETS["heldout"]["background_names"] == HELDOUT_PHOTOS
    assert "synthetic:heldout" not in SEG_DEFAULTS["data"]["datasets"]
    s = segmentation_scenes(40, "heldout", size=32, backgrounds=_bg(2, 32), num_objects=(3, 5),
                            sprite_scale=(0.5, 0.7))  # fmt: skip
    lut = torch.tensor((0, *mapping))
    inner = s.masks != IGN
    want = lut[torch.cat([torch.zeros(40, 1, dtype=torch.long), s.item_labels.clamp_min(0) + 1], 1)
               .gather(1, s.instances.long().flatten(1)).view_as(s.masks)]  # fmt: skip
    assert torch.equal(s.masks[inner].long(), want[inner])
    fg = (s.masks[inner] > 0).float().mean()
    assert fg > 0.15  # items are not vanishingly rare


def _blank_set(n: int) -> ArraySegmentationDataset:
    space = LabelSpace("toy", ("background", "a"))
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    return ArraySegmentationDataset(images, torch.zeros(n, 4, 4, dtype=torch.uint8), space, "toy")


def test_validation_split_is_seeded_disjoint_and_checked():
    from vislearn.data.segmentation.datasets import validation_split

    ds = _blank_set(10)
    train, val = validation_split(ds, 0.2, seed=3)
    again_train, again_val = validation_split(ds, 0.2, seed=3)
    assert len(val) == 2 and len(train) == 8
    assert not set(train.indices) & set(val.indices)
    assert sorted(train.indices + val.indices) == list(range(10))
    assert val.indices == again_val.indices and train.indices == again_train.indices
    assert validation_split(ds, 0.01, 0)[1].indices  # at least one image each side
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(VislearnError, match="validation fraction"):
            validation_split(ds, bad)


def test_validation_from_rest_lies_outside_the_labelled_subset():
    from vislearn.data.segmentation.datasets import validation_from_rest

    ds = _blank_set(50)
    labelled = fraction_subset(ds, 0.2, seed=0)  # 10 images
    val = validation_from_rest(ds, labelled, 0.3, seed=0)
    assert len(val) == 3 and not set(val.indices) & set(labelled.indices)
    assert val.indices == validation_from_rest(ds, labelled, 0.3, seed=0).indices
    with pytest.raises(VislearnError, match="val_from=labelled"):
        validation_from_rest(ds, fraction_subset(ds, 1.0), 0.2)


def test_contrast_masks_own_dataset_and_background_own():
    from vislearn.tasks.seg.modules import SegPretrainModule

    kw = {"num_classes": [3, 2], "backbone_kwargs": {"stem": "small_ds", "width": 8},
          "head_channels": 8}  # fmt: skip
    # global ids: set 0 = {0 (bg), 1, 2}, set 1 = {3 (bg), 4}
    y = torch.tensor([0, 1, 3, 4, IGN])
    assert SegPretrainModule(contrast_over="all", **kw).contrast_mask(y) is None
    own = SegPretrainModule(contrast_over="own_dataset", **kw).contrast_mask(y)
    set0, set1 = [1, 1, 1, 0, 0], [0, 0, 0, 1, 1]
    assert own.int().tolist()[:4] == [set0, set0, set1, set1]
    bg = SegPretrainModule(contrast_over="background_own", **kw).contrast_mask(y)
    # background pixels (0, 3) against their own set; object and ignored pixels against all
    assert bg.int().tolist() == [set0, [1] * 5, set1, [1] * 5, [1] * 5]
    with pytest.raises(VislearnError, match="contrast_over"):
        SegPretrainModule(contrast_over="nope", **kw)


def test_background_own_contrast_equals_numpy_reference():
    """The loss with the background_own mask = a NumPy InfoNCE whose background rows sum
    only over their own set's prototypes."""
    from vislearn.tasks.seg.modules import SegPretrainModule

    arch = {"backbone_kwargs": {"stem": "small_ds", "width": 8}, "head_channels": 8}
    m = SegPretrainModule(num_classes=[3, 2], contrast_over="background_own", **arch)
    v, protos = _emb(6, 5)
    y = torch.tensor([0, 1, 2, 3, 4, 3])
    got = pixel_prototype_contrastive(v, protos, y, 0.1, IGN, m.contrast_mask(y))
    logits = (v.numpy() @ protos.numpy().T) / 0.1
    own = {0: [0, 1, 2], 3: [3, 4]}
    losses = []
    for i, c in enumerate(y.tolist()):
        cols = own.get(c, list(range(5)))
        row = logits[i, cols]
        losses.append(-(logits[i, c] - np.log(np.exp(row - row.max()).sum()) - row.max()))
    assert got.item() == pytest.approx(float(np.mean(losses)), rel=1e-5)


def test_freeze_keeps_backbone_and_decoder_fixed():
    from vislearn.tasks.seg.modules import SegFinetuneModule

    arch = {"backbone_kwargs": {"stem": "small_ds", "width": 8}, "head_channels": 8}
    m = SegFinetuneModule(
        num_classes=3, freeze="backbone+decoder", lr=0.05, optimizer="adamw", **arch
    )
    m.train()
    assert not m.net.backbone.training and not m.net.decoder.training
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("net.classifiers") for n in trainable)
    before = {k: v.clone() for k, v in m.net.state_dict().items()}
    opt = m.configure_optimizers()["optimizer"]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in m.parameters() if p.requires_grad
    }
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 3, (2, 32, 32))
    loss = F.cross_entropy(m(x), y)
    loss.backward()
    opt.step()
    after = m.net.state_dict()
    for k, v in before.items():  # weights and batch-norm statistics unchanged
        same = torch.equal(after[k], v)
        assert same if not k.startswith("classifiers") else True, k
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("classif"))
    with pytest.raises(VislearnError, match="freeze"):
        SegFinetuneModule(num_classes=3, freeze="all")


def test_finetune_with_validation_split_tests_the_best_weights(tmp_path):
    import json

    from vislearn.core.config import load_config
    from vislearn.tasks.seg.config import SEG_DEFAULTS
    from vislearn.tasks.seg.run import evaluate_seg, finetune_seg

    (tmp_path / "none").mkdir()
    cfg = load_config(overrides=[
        f"out={tmp_path / 'ft'}", "data.image_size=32", "data.num_train=20", "data.num_test=6",
        f"data.cache_dir={tmp_path / 'cache'}", f"data.background_dir={tmp_path / 'none'}",
        "data.batch_size=4", "data.steps_per_epoch=2", "data.val_fraction=0.25",
        "data.target=synthetic:heldout", "trainer.max_steps=6", "trainer.val_every_n_epochs=1",
        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.progress=false",
        "model.head_channels=8", "model.backbone_kwargs={stem: small_ds, width: 8}",
        "model.optimizer=adamw", "model.lr=0.01",
    ], defaults=SEG_DEFAULTS)  # fmt: skip
    module, out, scores = finetune_seg(cfg)
    curve = scores["val_curve"]
    assert [s for s, _ in curve] == [2, 4, 6]
    best = max(curve, key=lambda c: c[1])
    assert scores["best_step"] == best[0]
    assert scores["val_miou"] * 100 == pytest.approx(best[1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images"] == 15 and metrics["val_images"] == 5
    # the exported model is the best validated one, and its test scores are the reported ones
    again = evaluate_seg(out / "model.safetensors", cfg)
    assert again["miou"] == pytest.approx(scores["miou"])
    assert torch.equal(
        module.net.classifiers[0].weight, module.best["state"]["classifiers.0.weight"]
    )
    # the best weights travel with the checkpoint
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["vislearn_best"]["best"]["step"] == scores["best_step"]
    with pytest.raises(VislearnError, match="val_fraction"):
        finetune_seg({**cfg, "data": {**cfg["data"], "val_fraction": 1.0}})


def test_seg_cli_flags_for_probe_and_validation_are_checked_before_writing(tmp_path):
    from vislearn.tasks.seg.cli import add_seg_parser, check_seg_config, seg_config

    parser = argparse.ArgumentParser(prog="vislearn")
    add_seg_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "ft"
    a = parser.parse_args(["seg", "finetune", "--freeze", "backbone+decoder", "--val-fraction",
                           "0.25", "--out", str(out)])  # fmt: skip
    cfg = check_seg_config(seg_config(a), "finetune")
    assert cfg["model"]["freeze"] == "backbone+decoder" and cfg["data"]["val_fraction"] == 0.25
    bad = parser.parse_args(["seg", "finetune", "--val-fraction", "1", "--out", str(out)])
    with pytest.raises(VislearnError, match="val_fraction"):
        check_seg_config(seg_config(bad), "finetune")
    bad = parser.parse_args(["seg", "pretrain", "--out", str(out), "model.contrast_over=mine"])
    with pytest.raises(VislearnError, match="contrast_over"):
        check_seg_config(seg_config(bad), "pretrain")
    assert not out.exists()
