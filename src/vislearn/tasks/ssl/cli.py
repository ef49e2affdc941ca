"""``vislearn pretrain`` and ``vislearn train-classifier``: self-supervised pretraining and
supervised classifiers with batch augmentations (MRA, CutMix, ...).

Both read their settings with :func:`vislearn.core.config.load_config`: the built-in
defaults (:data:`vislearn.core.config.DEFAULTS`), then ``--config FILE``, then the flags
(mapped onto config keys by :data:`PRETRAIN_FLAGS` / :data:`CLASSIFIER_FLAGS`), then
``section.key=value`` overrides. The checkpoint tools (eval, export, embed, ...) are in
:mod:`vislearn.tasks.ssl.cli_tools`.

This module imports nothing heavy at import time (the main CLI builds its parser from it).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from vislearn.core.config import DEFAULTS, flag_updates, lightning_count
from vislearn.core.errors import VislearnError

__all__ = [
    "CLASSIFIER_DEFAULTS",
    "CLASSIFIER_FLAGS",
    "CPU_BACKBONE",
    "PRETRAIN_FLAGS",
    "add_pretrain_parser",
    "add_train_classifier_parser",
    "classifier_config",
    "cmd_pretrain",
    "cmd_train_classifier",
    "pretrain_config",
    "print_table",
    "resolved_run_config",
    "validate_run",
]

CPU_BACKBONE = {"backbone": "resnet_tiny", "backbone_kwargs": {"stem": "small_ds", "width": 16}}

#: flag -> config key (or (key, convert)) of `vislearn pretrain`
PRETRAIN_FLAGS: dict[str, Any] = {
    "method": "method",
    "backbone": "model.backbone",
    "lr": "model.lr",
    "teacher": "model.teacher",
    "evaluator": "model.evaluator",
    "data": "data.dataset",
    "data_dir": "data.data_dir",
    "batch_size": "data.batch_size",
    "epochs": "trainer.max_epochs",
    "accelerator": ("trainer.accelerator", lightning_count),
    "devices": ("trainer.devices", lightning_count),
    "strategy": ("trainer.strategy", lightning_count),
    "precision": ("trainer.precision", lightning_count),
    "num_nodes": "trainer.num_nodes",
    "seed": "seed",
    "out": "out",
}

#: `vislearn train-classifier`: the pretrain defaults plus the occluded test's settings
CLASSIFIER_DEFAULTS: dict[str, Any] = copy.deepcopy(DEFAULTS)
CLASSIFIER_DEFAULTS["eval"] |= {"occlusion_size": 14, "occlusion_seed": 0, "occlusion_fill": 0}

#: flag -> config key (or (key, convert)) of `vislearn train-classifier`
CLASSIFIER_FLAGS: dict[str, Any] = {
    **{k: v for k, v in PRETRAIN_FLAGS.items() if k not in ("method", "teacher", "evaluator")},
    "augment": "model.batch_augment",
    "mae": "model.mae",
    "mask_ratio": "model.mra.mask_ratio",
    "mra_prob": "model.mra.prob",
    "score": "model.mra.score",
    "no_paste_back": ("model.mra.paste_back", lambda given: not given),
    "label_fraction": "data.label_fraction",
    "occlusion_size": "eval.occlusion_size",
    "occlusion_seed": "eval.occlusion_seed",
    "occlusion_fill": "eval.occlusion_fill",
}
# (--strategy / --num-nodes are pretrain-only flags: absent from train-classifier's namespace)


def pretrain_config(a: argparse.Namespace) -> dict:
    """The resolved config of ``vislearn pretrain``: defaults <- --config <- flags <- overrides."""
    from vislearn.core.config import load_config

    cfg = load_config(a.config, a.overrides, **flag_updates(a, PRETRAIN_FLAGS))
    cfg["method"] = a.method  # the positional METHOD wins over the recipe's and overrides
    return cfg


def classifier_config(a: argparse.Namespace) -> dict:
    """The resolved config of ``vislearn train-classifier`` (method ``supervised``)."""
    from vislearn.core.config import load_config

    if a.label_fraction is not None and not 0.0 < a.label_fraction <= 1.0:
        raise VislearnError(f"--label-fraction must be in (0, 1], got {a.label_fraction}")
    updates = flag_updates(a, CLASSIFIER_FLAGS)
    if not a.config and not a.backbone:  # no recipe: the CPU ResNet-tiny
        updates["model"] = {**CPU_BACKBONE, **updates.get("model", {})}
    cfg = load_config(
        a.config, a.overrides, defaults=CLASSIFIER_DEFAULTS, method="supervised", **updates
    )
    cfg["method"] = "supervised"
    d = cfg["data"]
    if d["label_fraction"] is not None and d["labelled_batch_size"] is None:
        d["labelled_batch_size"] = d["batch_size"]  # every row labelled: supervised only
    if not cfg["out"]:
        cfg["out"] = f"runs/classifier_{cfg['model'].get('batch_augment', 'standard')}"
    return cfg


def validate_run(cfg: dict, defaults: dict) -> dict:
    """Check ``cfg`` (types and ranges of every key, ``model.*`` against the method's
    signature, hardware flags, output folder) before anything is written."""
    from vislearn.core.schema import check_run_settings, validate_config
    from vislearn.tasks.ssl.methods import get_method

    method = cfg.get("method")
    if not method:
        raise VislearnError("no method given (e.g. `vislearn pretrain moco_v2`)")
    validate_config(cfg, defaults, get_method(method))
    check_run_settings(cfg["trainer"], cfg["out"] or f"runs/{method}")
    return cfg


def _yaml_plain(value: Any) -> Any:
    """``value`` as YAML-safe data (tuples -> lists), or ``None`` when it is not."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        items = [_yaml_plain(v) for v in value]
        return (
            None
            if any(i is None and v is not None for i, v in zip(items, value, strict=True))
            else items
        )
    if isinstance(value, dict):
        return {str(k): _yaml_plain(v) for k, v in value.items()}
    return None


def resolved_run_config(cfg: dict, model: Any) -> dict:
    """``cfg`` with what the run actually used filled in: every keyword argument the method
    was built with (its ``hparams``: defaults, and the input format taken from the data) under
    ``model``, and ``data.image_size`` / ``data.channels`` when the data chose them."""
    out = copy.deepcopy(cfg)
    hp = {k: _yaml_plain(v) for k, v in dict(getattr(model, "hparams", {})).items()}
    out["model"] = {**hp, **out["model"]}
    d = out["data"]
    if d.get("image_size") is None and hp.get("image_size") is not None:
        d["image_size"] = hp["image_size"]
    if d.get("channels") is None and hp.get("in_chans") is not None:
        d["channels"] = hp["in_chans"]
    return out


def add_pretrain_parser(sub: Any) -> None:
    """Register ``vislearn pretrain``."""
    pre = sub.add_parser(
        "pretrain",
        help="pretrain a backbone with a self-supervised method",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pretrain with METHOD. Settings come from built-in defaults, then --config "
        "FILE, then the flags below, then `section.key=value` overrides, e.g.\n"
        "  vislearn pretrain moco_v2 --config configs/fmnist_ssl/moco_v2.yaml model.lr=0.1\n"
        "Writes config.yaml, TensorBoard/CSV logs, checkpoints/last.ckpt and "
        "backbone.safetensors to --out; an interrupted run resumes from last.ckpt.",
    )
    pre.add_argument("method", help="method name (see `vislearn methods`)")
    pre.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="override any config field (model.*, data.*, trainer.*, eval.*)",
    )
    pre.add_argument("--config", help="YAML recipe (see configs/)")
    pre.add_argument(
        "--data",
        help="dataset: fmnist-mini (embedded, default), fmnist, or an "
        "image folder (class sub-folders = labelled; flat = unlabelled); for video methods "
        "synthetic-motion or a video folder (class folders, train/ + test/)",
    )
    pre.add_argument("--data-dir", help="where the Fashion-MNIST files are ($VISLEARN_DATA)")
    pre.add_argument("--out", help="output directory (default runs/METHOD)")
    pre.add_argument("--epochs", type=int, help="number of epochs")
    pre.add_argument("--batch-size", type=int, help="batch size per device")
    pre.add_argument("--backbone", help="backbone name (see `vislearn methods`)")
    pre.add_argument("--lr", type=float, help="peak learning rate")
    pre.add_argument("--seed", type=int)
    pre.add_argument(
        "--teacher", help="bingo: frozen pretrained teacher, a local .ckpt (model.teacher)"
    )
    pre.add_argument(
        "--evaluator",
        help="sage: frozen label-free evaluator, a local .ckpt/.safetensors (model.evaluator)",
    )
    pre.add_argument("--accelerator", help="cpu, gpu, ... (Lightning)")
    pre.add_argument("--devices", help="devices per node, e.g. 8 or auto (Lightning)")
    pre.add_argument("--num-nodes", type=int, help="number of nodes (Lightning)")
    pre.add_argument("--strategy", help="e.g. ddp (Lightning)")
    pre.add_argument("--precision", help="32-true, 16-mixed, bf16-mixed (Lightning)")
    pre.add_argument("--no-resume", action="store_true", help="ignore an existing last.ckpt")
    pre.add_argument(
        "--eval",
        action="store_true",
        help="after training, run offline kNN + linear probe and print a table",
    )


def add_train_classifier_parser(sub: Any) -> None:
    """Register ``vislearn train-classifier``."""
    tc = sub.add_parser(
        "train-classifier",
        help="train a supervised classifier with a batch augmentation (MRA, CutMix, ...)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Supervised cross-entropy training (the `supervised` method) with "
        "--augment, on all labels or a seeded --label-fraction, then clean and occluded "
        "(random square occluders) top-1 on the test split. Settings: defaults, --config, "
        "flags, `section.key=value` overrides, e.g.\n"
        "  vislearn train-classifier --augment mra --mae runs/mae/mae.safetensors \\\n"
        "      --data fmnist --label-fraction 0.1 --epochs 4 model.mra.mask_ratio=0.5\n"
        "Writes the run (checkpoints, logs, config.yaml, backbone.safetensors) and "
        "results.json to --out.",
    )
    tc.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="override any config field"
    )
    tc.add_argument("--config", help="YAML recipe (see configs/fmnist_mra/)")
    tc.add_argument(
        "--augment",
        choices=["standard", "mra", "cutmix", "mixup", "randaugment"],
        help="batch augmentation after crop + flip (default standard, or the config's)",
    )
    tc.add_argument("--mae", help="mra: pretrained MAE, mae.safetensors or its last.ckpt")
    tc.add_argument("--mask-ratio", type=float, help="mra: fraction of patches re-synthesised")
    tc.add_argument("--mra-prob", type=float, help="mra: probability per image")
    tc.add_argument(
        "--score",
        choices=["token_dot", "attention", "oracle"],
        help="mra: patch score (oracle: ground-truth masks, data.mask_channel=true, photo-fmnist)",
    )
    tc.add_argument(
        "--no-paste-back",
        action="store_true",
        default=None,
        help="mra: use the full decoder output",
    )
    tc.add_argument(
        "--data", help="labelled dataset: fmnist-mini (default), fmnist, photo-fmnist, a folder"
    )
    tc.add_argument("--data-dir", help="where the Fashion-MNIST files are ($VISLEARN_DATA)")
    tc.add_argument(
        "--label-fraction",
        type=float,
        help="train on a seeded class-balanced fraction of the labels, in (0, 1]",
    )
    tc.add_argument("--out", help="output directory (default runs/classifier_AUGMENT)")
    tc.add_argument("--epochs", type=int)
    tc.add_argument("--batch-size", type=int)
    tc.add_argument("--backbone", help="backbone name (default: the CPU ResNet-tiny)")
    tc.add_argument("--lr", type=float)
    tc.add_argument("--seed", type=int)
    tc.add_argument(
        "--occlusion-size",
        type=int,
        help="occluder side in pixels (eval.occlusion_size, 14; 0: off)",
    )
    tc.add_argument("--occlusion-seed", type=int, help="eval.occlusion_seed (0)")
    tc.add_argument(
        "--occlusion-fill", type=int, help="occluder value 0-255 (eval.occlusion_fill, 0)"
    )
    tc.add_argument("--accelerator", help="cpu, gpu, ... (Lightning)")
    tc.add_argument("--devices", help="devices per node (Lightning)")
    tc.add_argument("--precision", help="32-true, bf16-mixed, ... (Lightning)")
    tc.add_argument("--no-resume", action="store_true", help="ignore an existing last.ckpt")
    tc.add_argument("--json", help="also write the results to this JSON file")


def cmd_pretrain(a: argparse.Namespace) -> None:
    from vislearn.core.config import save_config
    from vislearn.tasks.ssl.run import evaluate, pretrain

    cfg = validate_run(pretrain_config(a), DEFAULTS)
    model, out, stats = pretrain(cfg, resume=not a.no_resume)
    if model.global_rank != 0:
        return
    save_config(resolved_run_config(cfg, model), Path(out) / "config.yaml")
    print(f"vislearn: trained {cfg['method']} -> {out} ({stats['images_per_s']:.0f} images/s)")
    if a.eval and getattr(model, "modality", "image") == "video":
        from vislearn.tasks.ssl.run import evaluate_video

        protocols = ("linear", "retrieval")
        if str(cfg["data"]["dataset"]).lower() == "synthetic-motion":
            protocols += ("background",)
        res = evaluate_video(model.backbone, cfg, protocols, crop_size=model.hparams.image_size)
        print_table(
            f"{cfg['method']} on {cfg['data']['dataset']}",
            [{"name": cfg["method"], **res}],
            list(res),
        )
    elif a.eval:
        e = cfg["eval"]
        res = evaluate(
            model.backbone,
            cfg["data"]["dataset"],
            cfg["data"]["data_dir"],
            knn_k=e["knn_k"],
            knn_t=e["knn_t"],
            linear_epochs=e["linear_epochs"],
            linear_lr=e["linear_lr"],
        )
        print_table(
            f"{cfg['method']} on {cfg['data']['dataset']}",
            [{"name": cfg["method"], **res}],
            list(res),
        )


def cmd_train_classifier(a: argparse.Namespace) -> None:
    from vislearn.core.config import save_config
    from vislearn.core.utils import write_json
    from vislearn.tasks.ssl.run import train_classifier

    cfg = validate_run(classifier_config(a), CLASSIFIER_DEFAULTS)
    e = cfg["eval"]
    occlusion = None
    if e["occlusion_size"]:
        occlusion = {
            "size": e["occlusion_size"],
            "seed": e["occlusion_seed"],
            "fill": e["occlusion_fill"],
        }
    model, out, res = train_classifier(cfg, occlusion, resume=not a.no_resume)
    if model.global_rank != 0:
        return
    save_config(resolved_run_config(cfg, model), Path(out) / "config.yaml")
    aug = cfg["model"].get("batch_augment", "standard")
    frac = cfg["data"]["label_fraction"]
    title = f"supervised + {aug} on {cfg['data']['dataset']}" + (
        f", {100 * frac:g} % of the labels" if frac is not None else ""
    )
    print_table(title, [{"name": aug, **res}], ["top1", "occluded_top1", "images_per_s"])
    print(f"vislearn: wrote {out / 'results.json'}")
    if a.json:
        write_json(a.json, {"settings": cfg, "occlusion": occlusion, **res})


def print_table(title: str, rows: list[dict], cols: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("name")
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(
            r["name"],
            *(f"{r[c]:.2f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols),
        )
    Console().print(table)
