"""End-to-end jobs of ``vislearn seg``: pretrain, fine-tune, evaluate, predict.

Run configuration (``vislearn.core.config.load_config(..., defaults=SEG_DEFAULTS)``: YAML recipe,
then flags, then ``section.key=value`` overrides)::

    method: mdp | naive_multi | single     # pretraining method (fine-tuning ignores it)
    model: {...}      # keyword arguments of SegPretrainModule / SegFinetuneModule
    data: {...}       # data sets (specs, see vislearn.tasks.seg.data), sizes, fractions, batch
    trainer: {...}    # max_steps, devices, strategy, precision, ...
    eval: {...}       # evaluation batch size, number of prediction pictures
    init: null        # fine-tuning: pretrained weights (pretrained.safetensors, a backbone file)
    transfer: backbone+decoder             # what fine-tuning takes from ``init``
    seed: 0
    out: runs/seg_mdp

A pretraining run writes ``config.yaml``, ``datasets.json``, TensorBoard/CSV logs,
``checkpoints/last.ckpt`` (atomic, resumable) and ``pretrained.safetensors``; a fine-tuning run
also ``model.safetensors`` (architecture and classes in its metadata) and ``metrics.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from vislearn.core.errors import VislearnError
from vislearn.core.utils import save_png, write_json
from vislearn.data.segmentation import (
    MultiDatasetSegmentation,
    SegmentationDataset,
    fraction_subset,
    validation_from_rest,
    validation_split,
)
from vislearn.engine.run import fit, last_checkpoint, quiet_lightning
from vislearn.tasks.seg.config import SEG_DEFAULTS
from vislearn.tasks.seg.data import (
    SegDataModule,
    build_segmentation_dataset,
    describe_sets,
    spec_name,
    validation_settings,
)
from vislearn.tasks.seg.modules import PRETRAIN_METHODS, SegFinetuneModule, SegPretrainModule

__all__ = [
    "SEG_DEFAULTS",
    "evaluate_seg",
    "finetune_seg",
    "load_seg_model",
    "predict_seg",
    "pretrain_seg",
]

#: model keys that describe the network (shared by pretraining and fine-tuning)
ARCH_KEYS = (
    "backbone",
    "backbone_kwargs",
    "head",
    "output_stride",
    "head_channels",
    "atrous_rates",
)


#: config keys a resumed segmentation run must share with the run in its folder
SEG_RUN_KEYS = ("method", "model.backbone", "model.backbone_kwargs", "model.head", "seed")


def _trainer_kwargs(cfg: dict) -> dict[str, Any]:
    """``build_trainer`` arguments of a step-based segmentation run."""
    t = dict(cfg["trainer"])
    steps = int(t.pop("max_steps"))
    if steps < 1:
        raise VislearnError(f"trainer.max_steps must be >= 1, got {steps}")
    val_every = int(t.pop("val_every_n_epochs") or 0)
    for key in ("devices", "num_nodes"):
        if isinstance(t.get(key), str) and t[key].isdigit():
            t[key] = int(t[key])
    return {
        "max_epochs": -1,
        "max_steps": steps,
        "check_val_every_n_epoch": val_every if val_every > 0 else 10**9,
        **t,
    }


def _build(cls: type, **kwargs: Any) -> Any:
    try:
        return cls(**kwargs)
    except TypeError as exc:  # an unknown model.* key
        raise VislearnError(f"{cls.__name__}: {exc}") from None


def _fraction_of(fractions: dict, spec: str) -> float:
    return float(fractions.get(spec, fractions.get(spec_name(spec), 1.0)))


def pretrain_seg(cfg: dict, resume: bool = True) -> tuple[SegPretrainModule, Path]:
    """Pretrain ``cfg["method"]`` on ``cfg["data"]["datasets"]``; writes the run folder and
    ``pretrained.safetensors``. Resumes from ``checkpoints/last.ckpt`` when present."""
    quiet_lightning()
    method = cfg["method"]
    if method not in PRETRAIN_METHODS:
        raise VislearnError(f"unknown method {method!r}; choose from {', '.join(PRETRAIN_METHODS)}")
    d = cfg["data"]
    specs = [str(s) for s in (d["datasets"] or [])]
    if not specs:
        raise VislearnError("data.datasets is empty")
    if method == "single" and len(specs) != 1:
        raise VislearnError(
            f"method single pretrains on one data set; data.datasets lists {len(specs)} "
            "(e.g. --datasets synthetic:fine)"
        )
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    sets: list[SegmentationDataset] = []
    for spec in specs:
        full = build_segmentation_dataset(spec, "train", d)
        sets.append(
            fraction_subset(full, _fraction_of(d["fractions"] or {}, spec), d["fraction_seed"])
        )
    multi = MultiDatasetSegmentation(sets)
    module = _build(
        SegPretrainModule,
        method=method,
        num_classes=[s.num_classes for s in sets],
        dataset_names=[s.name for s in sets],
        ignore_index=multi.ignore_index,
        in_chans=int(multi[0][0].shape[0]),
        seed=cfg["seed"],
        **cfg["model"],
    )
    out = Path(cfg["out"] or f"runs/seg_{method}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "datasets.json", describe_sets(sets))
    dm = SegDataModule(
        multi, None, d["batch_size"], d["num_workers"], cfg["seed"], d["steps_per_epoch"]
    )
    run = fit(
        module,
        dm,
        out,
        _trainer_kwargs(cfg),
        config=cfg,
        resume=resume,
        run_keys=SEG_RUN_KEYS + ("data.datasets",),
        export=lambda out: module.export(out / "pretrained.safetensors"),
    )
    module.train_seconds = run.seconds
    return module, out


def _file_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of a ``.safetensors`` file (empty for other files)."""
    from vislearn.core.artifacts import read_safetensors_metadata

    p = Path(path)
    return read_safetensors_metadata(p) if p.suffix == ".safetensors" and p.is_file() else {}


def _arch_from(path: str | os.PathLike | None) -> dict[str, Any]:
    """The architecture stored in a vislearn seg ``.safetensors`` file (else empty)."""
    if not path:
        return {}
    arch = _file_metadata(path).get("arch")
    if not isinstance(arch, dict):
        return {}
    return {k: arch[k] for k in ARCH_KEYS if k in arch}


def finetune_seg(cfg: dict, resume: bool = True) -> tuple[SegFinetuneModule, Path, dict]:
    """Fine-tune on ``data.target`` (labelled ``data.fraction`` of its train split) from
    ``cfg["init"]`` (or from scratch when ``None``) and evaluate on its test split.

    The network's architecture defaults to the one stored in ``init`` (a
    ``pretrained.safetensors``); ``model.*`` keys override it (``model.freeze`` =
    ``backbone+decoder`` makes it a per-pixel linear probe). With ``data.val_fraction`` > 0 a
    seeded share of the labelled images is held out (``data.val_from=rest``: as many other
    images of the train split, outside the labelled subset, instead), validated every
    ``trainer.val_every_n_epochs`` (and at the end), and the test scores are those of the best
    validated weights. Returns the module, the run folder and the scores (``miou``,
    ``pixel_acc`` ... as fractions, plus per-class IoU; ``val_miou`` and ``best_step`` with a
    validation split).
    """
    quiet_lightning()
    d = cfg["data"]
    init = cfg.get("init")
    if init and not Path(init).expanduser().is_file():
        raise VislearnError(f"pretrained weights not found: {init}")
    val_fraction, val_from = validation_settings(d)
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    target = str(d["target"])
    full = build_segmentation_dataset(target, "train", d)
    train = fraction_subset(full, float(d["fraction"]), d["fraction_seed"])
    test = build_segmentation_dataset(target, "test", d)
    if test.label_space.classes != train.label_space.classes:
        raise VislearnError(f"{target}: train and test splits have different classes")
    val = None
    if val_fraction > 0 and val_from == "rest":
        val = validation_from_rest(full, train, val_fraction, d["fraction_seed"])
    elif val_fraction > 0:
        train, val = validation_split(train, val_fraction, d["fraction_seed"])
    module = _build(
        SegFinetuneModule,
        num_classes=train.num_classes,
        class_names=list(train.classes),
        ignore_index=train.ignore_index,
        in_chans=int(train[0][0].shape[0]),
        seed=cfg["seed"],
        **{**_arch_from(init), "track_best": val is not None, **cfg["model"]},
    )
    out = Path(cfg["out"] or f"runs/seg_finetune_{spec_name(target)}")
    resuming = resume and last_checkpoint(out).is_file()
    loaded: list[str] = []
    if init and not resuming:
        loaded = module.load_pretrained(init, cfg.get("transfer") or "backbone+decoder")
    dm = SegDataModule(
        train, val if val is not None else test, d["batch_size"], d["num_workers"], cfg["seed"],
        d["steps_per_epoch"],
    )  # fmt: skip
    run_keys = (*SEG_RUN_KEYS, "data.target", "init")
    run = fit(module, dm, out, _trainer_kwargs(cfg), config=cfg, resume=resuming, run_keys=run_keys)
    module.train_seconds = run.seconds
    trainer = run.trainer
    selection: dict[str, Any] = {}
    if val is None:
        trainer.validate(module, datamodule=dm, verbose=False)
        scores = dict(module.scores)
    else:
        if not module.val_curve or module.val_curve[-1][0] != trainer.global_step:
            trainer.validate(module, datamodule=dm, verbose=False)  # the final weights too
        module.restore_best()
        selection = {
            "val_images": len(val),
            "val_miou": module.best["miou"] if module.best else None,
            "best_step": module.best["step"] if module.best else None,
            "val_curve": module.val_curve,
        }
        scores = _test_scores(module, test, cfg)
    module.scores = scores
    if trainer.is_global_zero:
        module.export(out / "model.safetensors", {"image_size": d["image_size"]})
        summary = {k: v for k, v in scores.items() if k != "confusion"}
        write_json(
            out / "metrics.json",
            {
                "target": target,
                "fraction": float(d["fraction"]),
                "train_images": len(train),
                "test_images": len(test),
                "init": str(init) if init else None,
                "transferred": "resumed from last.ckpt" if resuming else loaded,
                "steps": int(trainer.global_step),
                "train_seconds": module.train_seconds,
                **selection,
                **summary,
                "confusion": scores.get("confusion"),
            },
        )
    return module, out, {**scores, **selection}


def _test_scores(module: SegFinetuneModule, test: SegmentationDataset, cfg: dict) -> dict:
    """Scores of ``module``'s current weights on ``test`` (one process, its device)."""
    from vislearn.eval.segmentation import evaluate_segmentation

    h = module.hparams
    return evaluate_segmentation(
        module, test, h.num_classes, h.ignore_index, cfg["eval"]["batch_size"], module.device,
        h.class_names,
    )  # fmt: skip


def load_seg_model(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A fine-tuned network from ``model.safetensors`` (or its run folder): returns
    ``(model, info)`` where ``model`` maps uint8 images to logits and ``info`` holds
    ``classes``, ``ignore_index``, ``image_size`` and ``arch``."""
    from vislearn.data.augment import Normalize
    from vislearn.models.io import load_network

    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise VislearnError(
            f"model not found: {p} (give the model.safetensors of `vislearn seg finetune` or "
            "its run folder)"
        )
    meta = _file_metadata(p)
    if meta.get("format") != "vislearn-seg-model":
        raise VislearnError(
            f"{p} is not a fine-tuned vislearn segmentation model (no 'vislearn-seg-model' "
            "metadata); pretrained.safetensors must be fine-tuned first (`vislearn seg finetune`)"
        )
    arch, classes = meta["arch"], meta["classes"]
    net = load_network(p, "segmentation_net")
    model = torch.nn.Sequential(Normalize(int(arch.get("in_chans", 3))), net).eval()
    info = {
        "classes": classes,
        "ignore_index": int(meta.get("ignore_index", 255)),
        "image_size": meta.get("image_size"),
        "arch": arch,
        "path": str(p),
    }
    return model, info


def _eval_dataset(cfg: dict, spec: str | None, info: dict) -> SegmentationDataset:
    d = dict(cfg["data"])
    if info.get("image_size") and d.get("image_size") is None:
        d["image_size"] = info["image_size"]
    ds = build_segmentation_dataset(spec or d["target"], "test", d)
    if list(ds.classes) != list(info["classes"]):
        raise VislearnError(
            f"data set {ds.name!r} has classes {list(ds.classes)[:6]}..., the model "
            f"{list(info['classes'])[:6]}...: evaluate on the data set it was fine-tuned for"
        )
    return ds


def evaluate_seg(
    model_path: str | os.PathLike,
    cfg: dict,
    dataset: str | None = None,
    device: str = "cpu",
    out: str | os.PathLike | None = None,
) -> dict:
    """mIoU of a fine-tuned model on a data set's test split (default: ``data.target``);
    writes the scores as JSON to ``out`` when given."""
    from vislearn.eval.segmentation import evaluate_segmentation

    model, info = load_seg_model(model_path)
    ds = _eval_dataset(cfg, dataset, info)
    res = evaluate_segmentation(
        model,
        ds,
        len(info["classes"]),
        ds.ignore_index,
        cfg["eval"]["batch_size"],
        device,
        info["classes"],
    )
    res = {"model": info["path"], "dataset": ds.name, "images": len(ds), **res}
    if out is not None:
        write_json(out, res)
    return res


@torch.no_grad()
def predict_seg(
    model_path: str | os.PathLike,
    cfg: dict,
    out_dir: str | os.PathLike,
    dataset: str | None = None,
    images: str | os.PathLike | None = None,
    num: int | None = None,
    device: str = "cpu",
) -> list[Path]:
    """Colourised predictions: ``out_dir/pred_<i>.png`` (palette PNGs: class ids with the VOC
    colours) and ``out_dir/grid.png`` (image | ground truth | prediction rows; no ground truth
    for ``images``, a folder of plain image files). Returns the written paths."""
    from vislearn.data.datasets import IMAGE_EXTENSIONS, load_image
    from vislearn.data.video.davis import davis_palette, write_label_png
    from vislearn.eval.segmentation import prediction_grid

    model, info = load_seg_model(model_path)
    model.to(device)
    n = int(num or cfg["eval"]["num_predictions"])
    if n < 1:
        raise VislearnError(f"number of predictions must be >= 1, got {n}")
    ignore = int(info["ignore_index"])
    if images is not None:
        folder = Path(images).expanduser()
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not folder.is_dir() or not files:
            raise VislearnError(f"no image files in {folder}")
        size = info.get("image_size") or cfg["data"]["image_size"]
        chans = int(info["arch"].get("in_chans", 3))
        imgs = torch.stack([load_image(p, int(size), chans) for p in files[:n]])
        targets = None
    else:
        ds = _eval_dataset(cfg, dataset, info)
        items = [ds[i] for i in range(min(n, len(ds)))]
        imgs = torch.stack([x[0] for x in items])
        targets = torch.stack([x[1] for x in items])
    preds = torch.cat([model(b.to(device)).argmax(1).cpu() for b in imgs.split(32)])
    palette = davis_palette(256)
    out = Path(out_dir)
    paths = []
    for i, p in enumerate(preds):
        path = out / f"pred_{i:04d}.png"
        write_label_png(path, p.numpy(), palette)
        paths.append(path)
    grid = prediction_grid(imgs, targets, preds, palette, ignore)
    save_png(grid, out / "grid.png")
    paths.append(out / "grid.png")
    return paths
