"""End-to-end jobs shared by the CLI, the benchmarks and the Python API: pretrain a method from
a config, load/export backbones, evaluate with kNN / linear probe / semi-supervised fine-tuning /
few-shot episodes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from vislearn.config import save_config
from vislearn.data.datamodule import ImageDataModule
from vislearn.data.datasets import get_dataset
from vislearn.engine.base import SSLMethod
from vislearn.engine.trainer import Throughput, build_trainer
from vislearn.errors import VislearnError
from vislearn.eval import (
    extract_features,
    few_shot_eval,
    knn_accuracy,
    linear_probe,
    semi_supervised_finetune,
)
from vislearn.eval.fewshot import FEW_SHOT_CLASSIFIERS, episode_classes
from vislearn.methods import build_method
from vislearn.models import create_backbone, load_weights, read_state_file
from vislearn.utils import atomic_path


def build_datamodule(cfg: dict) -> ImageDataModule:
    d = cfg["data"]
    return ImageDataModule(
        dataset=d["dataset"],
        data_dir=d["data_dir"],
        image_size=d["image_size"],
        channels=d["channels"],
        batch_size=d["batch_size"],
        num_workers=d["num_workers"],
        knn_bank_size=d["knn_bank_size"],
        seed=cfg["seed"],
        label_fraction=d["label_fraction"],
        labelled_batch_size=d["labelled_batch_size"],
        label_seed=d["label_seed"],
    )


def build_from_config(cfg: dict, dm: ImageDataModule) -> SSLMethod:
    """The method of ``cfg`` with its input format taken from the data."""
    if not cfg.get("method"):
        raise VislearnError("no method given (e.g. `vislearn pretrain moco_v2`)")
    kwargs = {
        "in_chans": dm.channels,
        "image_size": dm.image_size,
        "num_classes": dm.num_classes,
        "seed": cfg["seed"],
        **cfg["model"],
    }
    return build_method(cfg["method"], **kwargs)


def pretrain(cfg: dict, resume: bool = True) -> tuple[SSLMethod, Path, dict[str, float]]:
    """Train ``cfg["method"]``; writes ``config.yaml``, logs, ``checkpoints/last.ckpt`` and
    ``backbone.safetensors`` under ``cfg["out"]``. Resumes from ``last.ckpt`` if present."""
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    out = Path(cfg["out"] or f"runs/{cfg['method']}")
    dm = build_datamodule(cfg)
    model = build_from_config(cfg, dm)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    throughput = Throughput()
    trainer = build_trainer(out, callbacks=[throughput], **cfg["trainer"])
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    if ckpt_path:
        print(f"vislearn: resuming from {last}")
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    if trainer.is_global_zero:
        export_backbone(model, out / "backbone.safetensors")
    stats = {"images_per_s": throughput.images_per_s, "train_seconds": throughput.seconds}
    return model, out, stats


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
    chans = _in_chans(model.backbone)
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
    from vislearn.utils import write_json

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


def export_backbone(model: SSLMethod, path: str | os.PathLike) -> None:
    """Write a method's online backbone as safetensors, with what is needed to rebuild it."""
    h = model.hparams
    spec = {
        "backbone": h.backbone,
        "backbone_kwargs": dict(h.backbone_kwargs or {}),
        "in_chans": h.in_chans,
        "method": getattr(model, "method_name", ""),
    }
    save_backbone(model.backbone, path, spec)


def save_backbone(backbone: nn.Module, path: str | os.PathLike, spec: dict[str, Any]) -> None:
    """Atomically write ``backbone``'s weights as safetensors with ``spec`` as metadata."""
    from safetensors.torch import save_file

    meta = {
        k: json.dumps(v) if isinstance(v, dict) else str(v)
        for k, v in spec.items()
        if v is not None
    }
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def read_backbone_spec(path: str | os.PathLike) -> dict[str, Any]:
    """Backbone name, kwargs and input channels recorded in a vislearn ``.ckpt`` or exported
    ``.safetensors`` (empty for external weights)."""
    path = Path(path)
    if not path.is_file():
        raise VislearnError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:  # noqa: BLE001
            raise VislearnError(f"cannot read {path}: {exc}") from None
        if "backbone" not in meta:
            return {}
        return {
            "backbone": meta["backbone"],
            "backbone_kwargs": json.loads(meta.get("backbone_kwargs", "{}")),
            "in_chans": int(meta.get("in_chans", 3)),
        }
    hp = read_state_file(path).get("hyper_parameters")
    if isinstance(hp, dict) and "backbone" in hp:
        return {
            "backbone": hp["backbone"],
            "backbone_kwargs": dict(hp.get("backbone_kwargs") or {}),
            "in_chans": hp.get("in_chans"),
        }
    return {}


def load_backbone(
    path: str | os.PathLike,
    backbone: str | None = None,
    backbone_kwargs: dict | None = None,
    in_chans: int | None = None,
) -> nn.Module:
    """Rebuild a backbone from a vislearn checkpoint (``.ckpt``) or exported
    ``.safetensors``; for external weights pass ``backbone`` (and its kwargs)."""
    spec = read_backbone_spec(path)
    name = backbone or spec.get("backbone")
    if name is None:
        raise VislearnError(f"{path} does not say which backbone it holds; pass --backbone NAME")
    kwargs = dict(spec.get("backbone_kwargs") or {}) if backbone is None else {}
    kwargs.update(backbone_kwargs or {})
    chans = in_chans or spec.get("in_chans") or 3
    model = create_backbone(name, in_chans=chans, **kwargs)
    return load_weights(model, path)


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
    split, with the fraction, seed and subset size."""
    train, test = _labelled_splits(backbone, dataset, data_dir, "semi-supervised fine-tuning")
    return semi_supervised_finetune(
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


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _labelled_splits(backbone: nn.Module, dataset: str, data_dir: str | None, what: str):
    """Train and test splits of ``dataset`` in ``backbone``'s input format; they need labels."""
    chans = _in_chans(backbone)
    train = get_dataset(dataset, "train", data_dir, channels=chans)
    test = get_dataset(dataset, "test", data_dir, image_size=train[0][0].shape[-1], channels=chans)
    if getattr(train, "labels", None) is None:
        raise VislearnError(f"dataset {dataset!r} has no labels; {what} needs labels")
    return train, test


def _in_chans(backbone: nn.Module) -> int:
    first = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    return first.in_channels if isinstance(first, nn.Conv2d) else 3
