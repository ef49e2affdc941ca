"""End-to-end jobs shared by the CLI, the benchmarks and the Python API: pretrain a method from
a config, load/export backbones, evaluate with kNN / linear probe / semi-supervised fine-tuning /
few-shot episodes, and video backbones with the video protocols (:func:`evaluate_video`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from vislearn.core.errors import VislearnError
from vislearn.data.augment import ViewConfig
from vislearn.data.datamodule import ImageDataModule
from vislearn.data.datasets import BUILTIN_DATASETS, get_dataset
from vislearn.data.video.datamodule import SYNTHETIC_MOTION, VideoDataModule
from vislearn.engine.run import fit
from vislearn.engine.ssl import SSLMethod
from vislearn.engine.trainer import Throughput
from vislearn.eval import (
    extract_features,
    few_shot_eval,
    knn_accuracy,
    linear_probe,
    semi_supervised_finetune,
)
from vislearn.eval.fewshot import FEW_SHOT_CLASSIFIERS, episode_classes
from vislearn.eval.video import (
    clip_retrieval,
    extract_clip_features,
    variance_share,
    video_finetune,
)
from vislearn.models.io import network_spec, save_network
from vislearn.tasks.ssl.methods import build_method, get_method, list_methods


def is_video_method(name: str) -> bool:
    """Whether method ``name`` trains on clips (``modality == "video"``)."""
    return get_method(name).modality == "video"


def build_datamodule(cfg: dict, exclude: np.ndarray | None = None) -> ImageDataModule:
    """The data module of ``cfg``: clips (:class:`VideoDataModule`) for a video method,
    images otherwise; a mismatch between method and data is an error. ``exclude``: training
    indices held out of training (images only; :class:`ImageDataModule`)."""
    d = cfg["data"]
    method = cfg.get("method")
    dataset = str(d["dataset"]).strip().lower()
    if method and is_video_method(method):
        if dataset in BUILTIN_DATASETS:
            raise VislearnError(
                f"{method} is a video method; use --data {SYNTHETIC_MOTION} or a folder of "
                f"videos, not the image data set {d['dataset']!r}"
            )
        if exclude is not None:
            raise VislearnError("held-out training indices (exclude) apply to image data only")
        return build_video_datamodule(cfg, get_method(method).clips_per_video)
    if dataset == SYNTHETIC_MOTION:
        video = [m for m in list_methods() if is_video_method(m)]
        raise VislearnError(
            f"{SYNTHETIC_MOTION} holds videos; method {method!r} takes images (video methods: "
            f"{', '.join(video)})"
        )
    return ImageDataModule(
        **_shared_data_kwargs(cfg),
        label_fraction=d["label_fraction"],
        labelled_batch_size=d["labelled_batch_size"],
        label_seed=d["label_seed"],
        exclude=exclude,
        mask_channel=d["mask_channel"],
    )


def _shared_data_kwargs(cfg: dict) -> dict:
    """The arguments image and video data modules share, from ``cfg["data"]``."""
    d = cfg["data"]
    keys = ("dataset", "data_dir", "image_size", "channels", "batch_size", "num_workers")
    return {**{k: d[k] for k in keys}, "knn_bank_size": d["knn_bank_size"], "seed": cfg["seed"]}


def build_video_datamodule(
    cfg: dict, clips_per_video: int = 2, online_eval: bool = True
) -> VideoDataModule:
    """The :class:`VideoDataModule` of ``cfg["data"]`` (image-only keys must be unset)."""
    d = cfg["data"]
    if d["label_fraction"] is not None or d["labelled_batch_size"] is not None:
        raise VislearnError("data.label_fraction / labelled_batch_size apply to image data only")
    return VideoDataModule(
        **_shared_data_kwargs(cfg),
        online_eval=online_eval,
        clips_per_video=clips_per_video,
        frames=d["frames"],
        frame_stride=d["frame_stride"],
        video_frames=d["video_frames"],
        num_train=d["num_train"],
        num_test=d["num_test"],
        background_bias=d["background_bias"],
        num_backgrounds=d["num_backgrounds"],
        distractors=d["distractors"],
        motion_speed=d["motion_speed"],
        synthetic_seed=d["synthetic_seed"],
        motion_design=d["motion_design"],
        mask_channel=d["mask_channel"],
    )


def build_from_config(cfg: dict, dm: ImageDataModule) -> SSLMethod:
    """The method of ``cfg`` with its input format taken from the data.

    On data where a horizontal flip changes the label (the synthetic motion set), a video
    method's ``hflip_p`` defaults to 0 (``model.hflip_p`` still overrides it)."""
    if not cfg.get("method"):
        raise VislearnError("no method given (e.g. `vislearn pretrain moco_v2`)")
    kwargs = {
        "in_chans": dm.channels,
        "image_size": dm.image_size,
        "num_classes": dm.num_classes,
        "seed": cfg["seed"],
    }
    if getattr(dm, "flip_changes_label", False) and is_video_method(cfg["method"]):
        kwargs["hflip_p"] = 0.0
    return build_method(cfg["method"], **{**kwargs, **cfg["model"]})


#: the config keys that define a pretraining run: resuming a run folder with other values
#: is an error (:func:`vislearn.engine.run.check_resume`)
PRETRAIN_RUN_KEYS = ("method", "model.backbone", "model.backbone_kwargs", "data.dataset", "seed")


def pretrain(cfg: dict, resume: bool = True) -> tuple[SSLMethod, Path, dict[str, float]]:
    """Train ``cfg["method"]``; writes ``config.yaml``, logs, ``checkpoints/last.ckpt`` and
    ``backbone.safetensors`` under ``cfg["out"]``. Resumes from ``last.ckpt`` if present (when
    the folder holds the same run: :data:`PRETRAIN_RUN_KEYS`); SIGTERM / SIGINT save it and
    exit (:class:`~vislearn.engine.run.RunInterrupted`).

    Returns the method, the run folder and ``images_per_s`` / ``train_seconds`` (training
    batches only) and ``val_seconds`` (the online evaluation)."""
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    out = Path(cfg["out"] or f"runs/{cfg['method']}")
    dm = build_datamodule(cfg)
    model = build_from_config(cfg, dm)
    h = model.hparams
    run_cfg = {  # the backbone the method chose by default is part of the run too
        **cfg,
        "model": {
            "backbone": h.get("backbone"),
            "backbone_kwargs": _plain_kwargs(h.get("backbone_kwargs")),
            **cfg["model"],
        },
    }
    throughput = Throughput()
    fit(
        model,
        dm,
        out,
        cfg["trainer"],
        config=run_cfg,
        resume=resume,
        run_keys=PRETRAIN_RUN_KEYS,
        callbacks=[throughput],
        export=lambda out: export_backbone(model, out / "backbone.safetensors", cfg),
    )
    stats = {
        "images_per_s": throughput.images_per_s,
        "train_seconds": throughput.seconds,
        "val_seconds": throughput.val_seconds,
    }
    return model, out, stats


def _plain_kwargs(kwargs: Any) -> dict:
    return {str(k): list(v) if isinstance(v, tuple) else v for k, v in dict(kwargs or {}).items()}


def evaluate_classifier(
    model: SSLMethod,
    dataset: str = "fmnist-mini",
    data_dir: str | None = None,
    occlusion_size: int | None = None,
    occlusion_seed: int = 0,
    occlusion_fill: int = 0,
    occlusion_count: int = 1,
    device: str | None = None,
) -> dict[str, float]:
    """Top-1 (%) of a method's ``backbone`` + linear ``classifier`` head on ``dataset``'s test
    split (``top1``) and, with ``occlusion_size``, on the same images with seeded square
    occluders (``occluded_top1``; :class:`~vislearn.data.occlusion.OccludedDataset`)."""
    from vislearn.data.occlusion import OccludedDataset

    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Module):
        raise VislearnError(f"{type(model).__name__} has no classifier head to evaluate")
    head = nn.Sequential(model.backbone, classifier)
    chans = backbone_in_chans(model.backbone)
    size = int(model.hparams.get("image_size") or 0) or None
    test = get_dataset(dataset, "test", data_dir, image_size=size, channels=chans)
    device = device or _default_device()
    res = {"top1": _top1(head, test, device)}
    if occlusion_size:
        occluded = OccludedDataset(
            test, occlusion_size, occlusion_seed, occlusion_fill, occlusion_count
        )
        res["occluded_top1"] = _top1(head, occluded, device)
    return res


def _top1(head: nn.Module, dataset, device: str) -> float:
    logits, labels = extract_features(head, dataset, device=device)
    return 100 * (logits.argmax(1) == labels).float().mean().item()


def train_classifier(
    cfg: dict, occlusion: dict | None = None, resume: bool = True
) -> tuple[SSLMethod, Path, dict[str, Any]]:
    """Train the supervised recipe ``cfg`` (:func:`pretrain`), then report the classifier
    head's clean top-1 and, with ``occlusion`` (``size``, ``seed``, ``fill``, ``count``), its
    occluded top-1 on the test split; writes ``results.json`` in the run directory."""
    from vislearn.core.utils import write_json

    model, out, stats = pretrain(cfg, resume=resume)
    res: dict[str, Any] = dict(stats)
    if model.global_rank == 0:
        occ = occlusion or {}
        res |= evaluate_classifier(
            model,
            cfg["data"]["dataset"],
            cfg["data"]["data_dir"],
            occlusion_size=occ.get("size"),
            occlusion_seed=occ.get("seed", 0),
            occlusion_fill=occ.get("fill", 0),
            occlusion_count=occ.get("count", 1),
        )
        write_json(out / "results.json", {"settings": cfg, "occlusion": occ, **res})
    return model, out, res


def export_backbone(model: SSLMethod, path: str | os.PathLike, cfg: dict | None = None) -> None:
    """Write a method's online backbone as safetensors, with what is needed to rebuild it and,
    given the run config ``cfg``, the data it was trained on (metadata ``train_dataset`` and
    ``train_data_dir``; the latter left out for a built-in data set)."""
    h = model.hparams
    spec = {
        "backbone": h.backbone,
        "backbone_kwargs": dict(h.backbone_kwargs or {}),
        "in_chans": h.in_chans,
        "method": getattr(model, "method_name", ""),
    }
    if cfg is not None:
        spec["train_dataset"] = str(cfg["data"]["dataset"])
        data_dir = cfg["data"].get("data_dir")
        spec["train_data_dir"] = str(data_dir) if data_dir is not None else None
    save_backbone(model.backbone, path, spec)


def save_backbone(backbone: nn.Module, path: str | os.PathLike, spec: dict[str, Any]) -> None:
    """Atomically write ``backbone``'s weights as safetensors that rebuild it alone
    (:func:`~vislearn.models.io.save_network`; ``spec``: ``backbone``, ``backbone_kwargs``,
    ``in_chans`` and e.g. ``method``, all kept as metadata)."""
    if not spec.get("backbone"):
        raise VislearnError("cannot export a backbone without its name; pass --backbone NAME")
    kwargs = {**(spec.get("backbone_kwargs") or {}), "in_chans": int(spec.get("in_chans") or 3)}
    save_network(backbone, path, str(spec["backbone"]), kwargs, extra=spec)


def read_backbone_spec(path: str | os.PathLike) -> dict[str, Any]:
    """Backbone name, kwargs and input channels recorded in a vislearn ``.ckpt`` or exported
    ``.safetensors`` (empty for external weights)."""
    path = Path(path)
    if not path.is_file():
        raise VislearnError(f"checkpoint not found: {path}")
    spec = network_spec(path, "backbone")
    if spec is None:
        return {}
    kwargs = dict(spec.kwargs)
    in_chans = kwargs.pop("in_chans", 3)
    return {"backbone": spec.arch, "backbone_kwargs": kwargs, "in_chans": in_chans}


def evaluate(
    backbone: nn.Module,
    dataset: str = "fmnist-mini",
    data_dir: str | None = None,
    protocols: tuple[str, ...] = ("knn", "linear"),
    knn_k: int = 200,
    knn_t: float = 0.07,
    linear_epochs: int = 100,
    linear_lr: float = 0.1,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Offline kNN / linear-probe top-1 (in %) of a frozen backbone on train -> test."""
    device = device or _default_device()
    train, test = _labelled_splits(backbone, dataset, data_dir, "kNN/linear")
    xtr, ytr = extract_features(backbone, train, device=device, progress=progress)
    xte, yte = extract_features(backbone, test, device=device, progress=progress)
    res: dict[str, float] = {}
    if "knn" in protocols:
        res["knn_top1"] = 100 * knn_accuracy(xte, yte, xtr, ytr, knn_k, knn_t)
    if "linear" in protocols:
        res["linear_top1"] = (
            100 * linear_probe(xtr, ytr, xte, yte, linear_epochs, linear_lr)["test_top1"]
        )
    return res


def evaluate_semi(
    backbone: nn.Module,
    fraction: float,
    dataset: str = "fmnist-mini",
    data_dir: str | None = None,
    seed: int = 0,
    epochs: int = 20,
    lr: float = 0.02,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """Semi-supervised fine-tuning (:func:`~vislearn.eval.semi.semi_supervised_finetune`) of
    ``backbone`` on a seeded ``fraction`` of ``dataset``'s training labels; top-1 on its test
    split in % (``semi_top1``), with the fraction, seed and subset size."""
    train, test = _labelled_splits(backbone, dataset, data_dir, "semi-supervised fine-tuning")
    res = semi_supervised_finetune(
        backbone,
        train,
        test,
        fraction,
        seed=seed,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        device=device or _default_device(),
        progress=progress,
    )
    res["semi_top1"] = 100 * res["semi_top1"]
    return res


def evaluate_fewshot(
    backbone: nn.Module,
    dataset: str = "fmnist-mini",
    data_dir: str | None = None,
    split: str = "test",
    ways: int = 5,
    shots: tuple[int, ...] = (1, 5),
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
    classifiers: tuple[str, ...] = FEW_SHOT_CLASSIFIERS,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Few-shot episodes (:func:`~vislearn.eval.fewshot.few_shot_eval`) on frozen features of
    ``dataset``'s ``split``: ``{"<ways>w<shots>s": {"<classifier>_top1": %, ..._ci95}}``, one
    entry per shot count, all drawn with the same seed."""
    if split not in ("train", "test"):
        raise VislearnError(f"split must be 'train' or 'test', got {split!r}")
    train, test = _labelled_splits(backbone, dataset, data_dir, "few-shot evaluation")
    pool = {"train": train, "test": test}[split]
    for k in shots:  # bad settings fail before the features are computed
        episode_classes(pool.labels, ways, k, queries, episodes)
    feats, labels = extract_features(
        backbone,
        pool,
        device=device or _default_device(),
        progress=progress,
    )
    return {
        f"{ways}w{k}s": few_shot_eval(feats, labels, ways, k, queries, episodes, seed, classifiers)
        for k in shots
    }


VIDEO_PROTOCOLS = ("linear", "finetune", "retrieval", "background")


def evaluate_video(
    backbone: nn.Module,
    cfg: dict,
    protocols: tuple[str, ...] = ("linear", "retrieval", "background"),
    crop_size: int | None = None,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Video protocols (:mod:`vislearn.eval.video`) of a frozen video backbone on the data of
    ``cfg["data"]``, settings from ``cfg["eval"]``; results in %.

    * ``linear``: ``motion_top1``, linear probe on multi-clip features (``eval.video_clips``
      uniform clips per video, features averaged), train -> test split;
    * ``retrieval``: ``retrieval_r<k>`` for ``eval.retrieval_ks``, test queries vs train
      gallery;
    * ``background`` (synthetic data): ``background_probe_top1``, the same linear probe
      predicting the background identity (chance = 1 / data.num_backgrounds), and on the
      unbiased test features the share of variance explained by the background identity
      and by the motion class (``background_var_share``, ``motion_var_share``);
    * ``finetune``: ``finetune_top1``, the whole backbone + a linear head trained on single
      random clips (``eval.finetune_*``), multi-clip test.

    ``crop_size``: the training crop side (test clips are centre-cropped to it; default the
    frame side).
    """
    unknown = sorted(set(protocols) - set(VIDEO_PROTOCOLS))
    if unknown or not protocols:
        raise VislearnError(f"unknown video protocol(s) {unknown}; choose from {VIDEO_PROTOCOLS}")
    if not is_video_backbone(backbone):
        raise VislearnError("the video protocols need a video backbone (3D convolutions)")
    device = device or _default_device()
    e = cfg["eval"]
    data = {**cfg["data"], "batch_size": 1, "mask_channel": False}  # no training batches here
    dm = build_video_datamodule({**cfg, "data": data}, clips_per_video=1, online_eval=False)
    if not dm.has_test_split:
        raise VislearnError(f"{dm.dataset} has no test split (train/ + test/ or val/ folders)")
    if "background" in protocols and not dm.is_synthetic:
        raise VislearnError("the background probe needs the synthetic motion set")
    k = int(e["video_clips"])
    train, test = dm.split("train", "uniform", k), dm.split("test", "uniform", k)
    if getattr(train, "labels", None) is None:
        raise VislearnError(f"{dm.dataset} has no labels; the video protocols need class folders")
    res: dict[str, float] = {}
    if {"linear", "retrieval", "background"} & set(protocols):
        kw = {"device": device, "crop_size": crop_size, "progress": progress}
        xtr, ytr = extract_clip_features(backbone, train, **kw)
        xte, yte = extract_clip_features(backbone, test, **kw)
        probe = {"epochs": e["linear_epochs"], "lr": e["linear_lr"], "seed": cfg["seed"]}
        if "linear" in protocols:
            res["motion_top1"] = 100 * linear_probe(xtr, ytr, xte, yte, **probe)["test_top1"]
        if "retrieval" in protocols:
            recall = clip_retrieval(xte, yte, xtr, ytr, tuple(e["retrieval_ks"]))
            res |= {f"retrieval_{key}": 100 * value for key, value in recall.items()}
        if "background" in protocols:
            btr, bte = (
                torch.as_tensor(dm.split(s, target="background").labels) for s in ("train", "test")
            )
            res["background_probe_top1"] = (
                100 * linear_probe(xtr, btr, xte, bte, **probe)["test_top1"]
            )
            res["background_var_share"] = 100 * variance_share(xte, bte)
            res["motion_var_share"] = 100 * variance_share(xte, yte)
    if "finetune" in protocols:
        augment = ViewConfig(blur_p=0.0, hflip_p=0.0 if dm.flip_changes_label else 0.5)
        out = video_finetune(
            backbone,
            dm.split("train", "random"),
            test,
            num_classes=dm.num_classes,
            epochs=e["finetune_epochs"],
            lr=e["finetune_lr"],
            batch_size=e["finetune_batch_size"],
            augment=augment,
            crop_size=crop_size,
            seed=cfg["seed"],
            device=device,
            progress=progress,
        )
        res["finetune_top1"] = 100 * out["finetune_top1"]
    return res


def is_video_backbone(backbone: nn.Module) -> bool:
    """Whether ``backbone`` takes clips (it has 3D convolutions)."""
    return any(isinstance(m, nn.Conv3d) for m in backbone.modules())


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _labelled_splits(backbone: nn.Module, dataset: str, data_dir: str | None, what: str):
    """Train and test splits of ``dataset`` in ``backbone``'s input format; they need labels."""
    if is_video_backbone(backbone):
        raise VislearnError(
            f"{what} of images needs an image backbone; for a video backbone use the video "
            "protocols (vislearn eval video-linear|video-finetune|retrieval|background-probe)"
        )
    chans = backbone_in_chans(backbone)
    train = get_dataset(dataset, "train", data_dir, channels=chans)
    test = get_dataset(dataset, "test", data_dir, image_size=train[0][0].shape[-1], channels=chans)
    if getattr(train, "labels", None) is None:
        raise VislearnError(f"dataset {dataset!r} has no labels; {what} needs labels")
    return train, test


def backbone_in_chans(backbone: nn.Module) -> int:
    """Input channels of ``backbone``: those of its first convolution (3 when it starts with a
    linear layer)."""
    first = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    return first.in_channels if isinstance(first, nn.Conv2d) else 3
