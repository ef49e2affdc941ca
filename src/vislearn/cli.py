"""The ``vislearn`` command line.

vislearn methods                                  list methods and backbones
vislearn pretrain METHOD [--config F] [k=v ...]   self-supervised pretraining (mae, moco_v2, ...)
vislearn train-classifier --augment mra --mae F   classifier + MRA/CutMix/..., occluded test
vislearn mra-grid --mae F --out grid.png          original / mask / reconstruction / MRA images
vislearn eval knn|linear --checkpoint CKPT        offline evaluation of a frozen backbone
vislearn eval semi --ckpt CKPT --fraction 0.01    fine-tune on a seeded 1 % of the labels
vislearn eval fewshot --ckpt CKPT --ways 5        N-way K-shot episodes on frozen features
vislearn eval video-linear|video-finetune|retrieval|background-probe --ckpt CKPT
                                                  video backbones (motion classes, clips)
vislearn export --checkpoint CKPT --out F         backbone weights -> safetensors
vislearn embed --checkpoint CKPT --out F.png      t-SNE plot of features
vislearn demo                                     the end-to-end demo on embedded data
vislearn dit sample|bench --model DIR ...         DiT sampling with feature caching (DuCa)
"""

from __future__ import annotations

import argparse
import json
import sys

from vislearn.core.errors import VislearnError

DEMO_EPOCHS = 15
#: `vislearn eval` protocol -> vislearn.tasks.ssl.run.evaluate_video protocol
VIDEO_PROTOCOLS = {
    "video-linear": "linear",
    "video-finetune": "finetune",
    "retrieval": "retrieval",
    "background-probe": "background",
}
LINEAR = (100, 0.1)  # linear-probe epochs, lr
SEMI = (20, 0.02, 64)  # semi-supervised fine-tune epochs, lr, batch size
CPU_BACKBONE = {"backbone": "resnet_tiny", "backbone_kwargs": {"stem": "small_ds", "width": 16}}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vislearn",
        description="Self-/semi-supervised visual representation learning on one engine.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `vislearn COMMAND --help` for the options of a command.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("methods", help="list available methods and backbones")

    pre = sub.add_parser(
        "pretrain",
        help="pretrain a backbone with a self-supervised method",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pretrain with METHOD. Settings come from built-in defaults, then --config "
        "FILE, then the flags below, then `section.key=value` overrides, e.g.\n"
        "  vislearn pretrain moco_v2 --config configs/moco_v2_fmnist.yaml model.lr=0.1\n"
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
    tc.add_argument("--score", choices=["token_dot", "attention"], help="mra: patch score")
    tc.add_argument("--no-paste-back", action="store_true", help="mra: use the full decoder output")
    tc.add_argument("--data", help="labelled dataset: fmnist-mini (default), fmnist, a folder")
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
        "--occlusion-size", type=int, default=14, help="occluder side in pixels (14; 0: off)"
    )
    tc.add_argument("--occlusion-seed", type=int, default=0)
    tc.add_argument("--occlusion-fill", type=int, default=0, help="occluder value 0-255 (0)")
    tc.add_argument("--accelerator", help="cpu, gpu, ... (Lightning)")
    tc.add_argument("--devices", help="devices per node (Lightning)")
    tc.add_argument("--precision", help="32-true, bf16-mixed, ... (Lightning)")
    tc.add_argument("--no-resume", action="store_true", help="ignore an existing last.ckpt")
    tc.add_argument("--json", help="also write the results to this JSON file")

    mg = sub.add_parser(
        "mra-grid",
        help="visual check of MRA: original / mask / reconstruction / augmented",
        description="Apply MRA (to every image) with a pretrained MAE and write a grid: rows "
        "original, mask (masked patches gray), MAE reconstruction, augmented image.",
    )
    mg.add_argument("--mae", required=True, help="mae.safetensors or the MAE run's last.ckpt")
    mg.add_argument("--out", required=True, help="output PNG")
    mg.add_argument("--data", default="fmnist-mini")
    mg.add_argument("--data-dir")
    mg.add_argument("--split", default="test", choices=["train", "test"])
    mg.add_argument("--n", type=int, default=8, help="images (8)")
    mg.add_argument("--mask-ratio", type=float, default=0.5, help="(0.5)")
    mg.add_argument("--score", choices=["token_dot", "attention"], default="token_dot")
    mg.add_argument("--no-paste-back", action="store_true")
    mg.add_argument("--seed", type=int, default=0, help="which images (0)")

    ev = sub.add_parser(
        "eval",
        help="evaluate a backbone: kNN, linear probe, semi-supervised fine-tune, few-shot",
        description="knn/linear/fewshot use frozen features; semi fine-tunes a copy of the "
        "whole backbone with a linear head on a seeded class-balanced label fraction.",
    )
    ev.add_argument("protocol", choices=["knn", "linear", "semi", "fewshot", *VIDEO_PROTOCOLS])
    ev.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="video protocols: data.* / eval.* settings (e.g. data.num_train=500)",
    )
    _checkpoint_args(ev)
    ev.add_argument(
        "--data",
        help="labelled dataset with a test split (default fmnist-mini; video protocols: "
        "synthetic-motion, or a video folder with train/ and test/)",
    )
    ev.add_argument(
        "--config",
        help="video protocols: a recipe or a run's config.yaml for the data.* and eval.* "
        "settings (e.g. the synthetic set's size and background bias)",
    )
    ev.add_argument("--data-dir")
    ev.add_argument("--k", type=int, default=200, help="kNN neighbours (default 200)")
    ev.add_argument("--t", type=float, default=0.07, help="kNN temperature (default 0.07)")
    ev.add_argument(
        "--epochs",
        type=int,
        help=f"linear-probe / fine-tune epochs (default {LINEAR[0]} / {SEMI[0]})",
    )
    ev.add_argument(
        "--lr", type=float, help=f"linear-probe / fine-tune learning rate ({LINEAR[1]} / {SEMI[1]})"
    )
    ev.add_argument("--fraction", type=float, help="semi: labelled fraction in (0, 1], e.g. 0.01")
    ev.add_argument(
        "--batch-size", type=int, help=f"semi / video-finetune: batch size (semi: {SEMI[2]})"
    )
    ev.add_argument(
        "--seed", type=int, default=0, help="semi: labelled subset; fewshot: episodes (default 0)"
    )
    ev.add_argument("--ways", type=int, default=5, help="fewshot: classes per episode (5)")
    ev.add_argument(
        "--shots", type=int, nargs="+", default=[1, 5], help="fewshot: shots per class (1 5)"
    )
    ev.add_argument("--queries", type=int, default=15, help="fewshot: queries per class (15)")
    ev.add_argument("--episodes", type=int, default=600, help="fewshot: episodes (600)")
    ev.add_argument(
        "--classifier",
        nargs="+",
        choices=["prototype", "logistic"],
        default=["prototype", "logistic"],
        help="fewshot: classifiers on the support features (both)",
    )
    ev.add_argument(
        "--split", default="test", choices=["train", "test"], help="fewshot: episode pool (test)"
    )
    ev.add_argument("--json", help="also write the result to this JSON file")

    ex = sub.add_parser("export", help="export backbone weights to safetensors")
    _checkpoint_args(ex)
    ex.add_argument("--out", required=True, help="output .safetensors file")

    em = sub.add_parser("embed", help="t-SNE plot of backbone features")
    _checkpoint_args(em)
    em.add_argument("--data", default="fmnist-mini")
    em.add_argument("--data-dir")
    em.add_argument("--split", default="test", choices=["train", "test"])
    em.add_argument("--out", required=True, help="output PNG")

    de = sub.add_parser("demo", help="pretrain MoCo v2 on the embedded data, evaluate, plot")
    de.add_argument("--out", default="runs/demo")
    de.add_argument("--epochs", type=int, default=DEMO_EPOCHS)

    from vislearn.tasks.dit.cli import add_dit_parser
    from vislearn.tasks.seg.cli import add_seg_parser
    from vislearn.tasks.vos.cli import add_train_uvos_parser, add_video_seg_parser

    add_dit_parser(sub)
    add_seg_parser(sub)
    add_train_uvos_parser(sub)
    add_video_seg_parser(sub)
    return p


def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        "--ckpt",
        required=True,
        help="vislearn .ckpt / .safetensors, or external weights with --backbone",
    )
    p.add_argument("--backbone", help="backbone name for external weights")
    p.add_argument("--in-chans", type=int, help="input channels for external weights")


def _flags_to_updates(a: argparse.Namespace) -> dict:
    up: dict = {"method": a.method}
    model, data, trainer = {}, {}, {}
    if a.backbone:
        model["backbone"] = a.backbone
    if a.lr is not None:
        model["lr"] = a.lr
    for key in ("teacher", "evaluator"):
        if getattr(a, key):
            model[key] = getattr(a, key)
    if a.data:
        data["dataset"] = a.data
    if a.data_dir:
        data["data_dir"] = a.data_dir
    if a.batch_size:
        data["batch_size"] = a.batch_size
    if a.epochs:
        trainer["max_epochs"] = a.epochs
    for key in ("accelerator", "devices", "strategy", "precision"):
        if getattr(a, key):
            value = getattr(a, key)
            trainer[key] = int(value) if value.isdigit() else value
    if a.num_nodes:
        trainer["num_nodes"] = a.num_nodes
    if a.seed is not None:
        up["seed"] = a.seed
    if a.out:
        up["out"] = a.out
    return {**up, "model": model, "data": data, "trainer": trainer}


def _classifier_config(a: argparse.Namespace) -> dict:
    from vislearn.core.config import load_config

    if a.label_fraction is not None and not 0.0 < a.label_fraction <= 1.0:
        raise VislearnError(f"--label-fraction must be in (0, 1], got {a.label_fraction}")
    model: dict = {}
    if not a.config and not a.backbone:
        model |= CPU_BACKBONE
    if a.backbone:
        model["backbone"] = a.backbone
    if a.lr is not None:
        model["lr"] = a.lr
    if a.augment:
        model["batch_augment"] = a.augment
    if a.mae:
        model["mae"] = a.mae
    mra = {
        k: v
        for k, v in (("mask_ratio", a.mask_ratio), ("prob", a.mra_prob), ("score", a.score))
        if v is not None
    }
    if a.no_paste_back:
        mra["paste_back"] = False
    data: dict = {}
    if a.data:
        data["dataset"] = a.data
    if a.data_dir:
        data["data_dir"] = a.data_dir
    if a.batch_size:
        data["batch_size"] = a.batch_size
    trainer: dict = {}
    if a.epochs:
        trainer["max_epochs"] = a.epochs
    for key in ("accelerator", "devices", "precision"):
        if getattr(a, key):
            value = getattr(a, key)
            trainer[key] = int(value) if value.isdigit() else value
    up: dict = {"method": "supervised", "model": model, "data": data, "trainer": trainer}
    if a.seed is not None:
        up["seed"] = a.seed
    if a.out:
        up["out"] = a.out
    cfg = load_config(a.config, a.overrides, **up)
    cfg["method"] = "supervised"
    m = cfg["model"]
    if mra:
        m["mra"] = {**(m.get("mra") or {}), **mra}
    if a.label_fraction is not None:
        cfg["data"]["label_fraction"] = a.label_fraction
    d = cfg["data"]
    if d["label_fraction"] is not None and d["labelled_batch_size"] is None:
        d["labelled_batch_size"] = d["batch_size"]  # every row labelled: supervised only
    if not cfg["out"]:
        cfg["out"] = f"runs/classifier_{m.get('batch_augment', 'standard')}"
    return cfg


def cmd_train_classifier(a: argparse.Namespace) -> None:
    from vislearn.core.utils import write_json
    from vislearn.tasks.ssl.run import train_classifier

    cfg = _classifier_config(a)
    occlusion = None
    if a.occlusion_size:
        occlusion = {"size": a.occlusion_size, "seed": a.occlusion_seed, "fill": a.occlusion_fill}
    model, out, res = train_classifier(cfg, occlusion, resume=not a.no_resume)
    if model.global_rank != 0:
        return
    aug = cfg["model"].get("batch_augment", "standard")
    frac = cfg["data"]["label_fraction"]
    title = f"supervised + {aug} on {cfg['data']['dataset']}" + (
        f", {100 * frac:g} % of the labels" if frac is not None else ""
    )
    _print_table(title, [{"name": aug, **res}], ["top1", "occluded_top1", "images_per_s"])
    print(f"vislearn: wrote {out / 'results.json'}")
    if a.json:
        write_json(a.json, {"settings": cfg, "occlusion": occlusion, **res})


def cmd_mra_grid(a: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from vislearn.core.utils import save_png
    from vislearn.data import get_dataset
    from vislearn.data.mra import MaskReconstruct, mra_grid
    from vislearn.models.mae import load_mae

    if a.n < 1:
        raise VislearnError(f"--n must be >= 1, got {a.n}")
    mae = load_mae(a.mae)
    mra = MaskReconstruct(
        mae, a.mask_ratio, prob=1.0, score=a.score, paste_back=not a.no_paste_back
    )
    ds = get_dataset(a.data, a.split, a.data_dir, channels=mae.in_chans)
    idx = np.random.default_rng(a.seed).choice(len(ds), size=min(a.n, len(ds)), replace=False)
    images = torch.stack([ds[int(i)][0] for i in idx])
    save_png(mra_grid(mra, images), a.out)
    print(f"vislearn: wrote {a.out} ({len(idx)} images, mask ratio {a.mask_ratio}, {a.score})")


def _print_table(title: str, rows: list[dict], cols: list[str]) -> None:
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


def cmd_pretrain(a: argparse.Namespace) -> None:
    from vislearn.core.config import load_config
    from vislearn.tasks.ssl.run import evaluate, pretrain

    cfg = load_config(a.config, a.overrides, **_flags_to_updates(a))
    if cfg["method"] != a.method and a.config:
        cfg["method"] = a.method
    model, out, stats = pretrain(cfg, resume=not a.no_resume)
    if model.global_rank != 0:
        return
    print(f"vislearn: trained {cfg['method']} -> {out} ({stats['images_per_s']:.0f} images/s)")
    if a.eval and getattr(model, "modality", "image") == "video":
        from vislearn.tasks.ssl.run import evaluate_video

        protocols = ("linear", "retrieval")
        if str(cfg["data"]["dataset"]).lower() == "synthetic-motion":
            protocols += ("background",)
        res = evaluate_video(model.backbone, cfg, protocols, crop_size=model.hparams.image_size)
        _print_table(
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
        _print_table(
            f"{cfg['method']} on {cfg['data']['dataset']}",
            [{"name": cfg["method"], **res}],
            list(res),
        )


def _given(value, default):
    return default if value is None else value


def cmd_eval(a: argparse.Namespace) -> None:
    from vislearn.core.utils import write_json
    from vislearn.tasks.ssl.run import evaluate, evaluate_fewshot, evaluate_semi, load_backbone

    if a.protocol in VIDEO_PROTOCOLS:
        return _eval_video(a)
    if a.overrides or a.config:
        raise VislearnError("--config and section.key=value apply to the video protocols only")
    if getattr(a, "data", None) is None:
        a.data = "fmnist-mini"
    if a.protocol == "semi" and a.fraction is None:
        raise VislearnError("eval semi needs --fraction, the labelled fraction in (0, 1]")
    if a.protocol == "semi" and not 0.0 < a.fraction <= 1.0:
        raise VislearnError(f"--fraction must be in (0, 1], got {a.fraction}")
    bb = load_backbone(a.checkpoint, a.backbone, in_chans=a.in_chans)
    if a.protocol == "semi":
        epochs, lr = _given(a.epochs, SEMI[0]), _given(a.lr, SEMI[1])
        batch = _given(a.batch_size, SEMI[2])
        res = evaluate_semi(
            bb, a.fraction, a.data, a.data_dir, a.seed, epochs, lr, batch, progress=True
        )
    elif a.protocol == "fewshot":
        res = {"ways": a.ways, "queries": a.queries, "episodes": a.episodes, "seed": a.seed}
        res["split"] = a.split
        res |= evaluate_fewshot(
            bb,
            a.data,
            a.data_dir,
            a.split,
            a.ways,
            tuple(a.shots),
            a.queries,
            a.episodes,
            a.seed,
            tuple(a.classifier),
            progress=True,
        )
    else:
        res = evaluate(
            bb,
            a.data,
            a.data_dir,
            protocols=(a.protocol,),
            knn_k=a.k,
            knn_t=a.t,
            linear_epochs=_given(a.epochs, LINEAR[0]),
            linear_lr=_given(a.lr, LINEAR[1]),
            progress=True,
        )
    out = {"checkpoint": str(a.checkpoint), "dataset": a.data, **res}
    print(json.dumps(out))
    if a.json:
        write_json(a.json, out)


def _eval_video(a: argparse.Namespace) -> None:
    """`vislearn eval video-linear|video-finetune|retrieval|background-probe`."""
    from vislearn.core.config import load_config
    from vislearn.core.utils import write_json
    from vislearn.tasks.ssl.run import evaluate_video, load_backbone

    data: dict = {}
    if a.data:
        data["dataset"] = a.data
    elif not a.config:
        data["dataset"] = "synthetic-motion"
    if a.data_dir:
        data["data_dir"] = a.data_dir
    cfg = load_config(a.config, a.overrides, data=data, seed=a.seed)
    protocol = VIDEO_PROTOCOLS[a.protocol]
    ev = cfg["eval"]
    if protocol == "finetune":
        ev["finetune_epochs"] = _given(a.epochs, ev["finetune_epochs"])
        ev["finetune_lr"] = _given(a.lr, ev["finetune_lr"])
        ev["finetune_batch_size"] = _given(a.batch_size, ev["finetune_batch_size"])
    else:
        ev["linear_epochs"] = _given(a.epochs, ev["linear_epochs"])
        ev["linear_lr"] = _given(a.lr, ev["linear_lr"])
    bb = load_backbone(a.checkpoint, a.backbone, in_chans=a.in_chans)
    crop = cfg["model"].get("image_size") if isinstance(cfg["model"], dict) else None
    res = evaluate_video(bb, cfg, (protocol,), crop_size=crop, progress=True)
    out = {"checkpoint": str(a.checkpoint), "dataset": cfg["data"]["dataset"], **res}
    print(json.dumps(out))
    if a.json:
        write_json(a.json, out)


def cmd_export(a: argparse.Namespace) -> None:
    from vislearn.tasks.ssl.run import load_backbone, read_backbone_spec, save_backbone

    bb = load_backbone(a.checkpoint, a.backbone, in_chans=a.in_chans)
    spec = read_backbone_spec(a.checkpoint) or {"backbone": a.backbone, "in_chans": a.in_chans}
    save_backbone(bb, a.out, spec)
    print(f"vislearn: wrote {a.out} ({len(bb.state_dict())} tensors)")


def cmd_embed(a: argparse.Namespace) -> None:
    from vislearn.data import get_dataset
    from vislearn.eval import extract_features, plot_embedding
    from vislearn.tasks.ssl.run import backbone_in_chans, load_backbone

    bb = load_backbone(a.checkpoint, a.backbone, in_chans=a.in_chans)
    ds = get_dataset(a.data, a.split, a.data_dir, channels=backbone_in_chans(bb))
    feats, labels = extract_features(bb, ds)
    if (labels < 0).all():
        labels = labels.clamp(min=0)
    plot_embedding(feats, labels, a.out, getattr(ds, "classes", None))
    print(f"vislearn: wrote {a.out}")


def cmd_demo(a: argparse.Namespace) -> None:
    """MoCo v2 on the embedded Fashion-MNIST subset, then kNN + linear eval and t-SNE."""
    from vislearn.core.config import load_config
    from vislearn.core.utils import write_json
    from vislearn.data import FMNIST_CLASSES, get_dataset
    from vislearn.eval import extract_features, plot_embedding
    from vislearn.models import create_backbone
    from vislearn.tasks.ssl.run import evaluate, pretrain

    cfg = load_config(
        None,
        method="moco_v2",
        out=a.out,
        model={
            **CPU_BACKBONE,
            "proj_hidden_dim": 512,
            "queue_size": 4096,
            "lr": 0.06,
            "temperature": 0.2,
        },
        trainer={"max_epochs": a.epochs},
    )
    model, out, stats = pretrain(cfg)
    rows = []
    random_bb = create_backbone(
        CPU_BACKBONE["backbone"], in_chans=1, **CPU_BACKBONE["backbone_kwargs"]
    )
    for name, bb in (("random_init", random_bb), ("moco_v2", model.backbone)):
        rows.append({"name": name, **evaluate(bb, "fmnist-mini")})
    rows[-1]["images_per_s"] = stats["images_per_s"]
    _print_table(
        f"Demo: MoCo v2, {a.epochs} epochs, embedded Fashion-MNIST (5k train / 1k test), top-1 %",
        rows,
        ["knn_top1", "linear_top1"],
    )
    test = get_dataset("fmnist-mini", "test")
    feats, labels = extract_features(model.backbone, test)
    plot_embedding(
        feats,
        labels,
        out / "tsne.png",
        list(FMNIST_CLASSES),
        title=f"MoCo v2 ({a.epochs} epochs) features, Fashion-MNIST test",
    )
    write_json(out / "results.json", {"settings": cfg, "rows": rows})
    print(f"vislearn: wrote {out / 'tsne.png'} and {out / 'results.json'}")


def cmd_methods(a: argparse.Namespace) -> None:
    from vislearn.accel.schedule import PRESETS
    from vislearn.models import list_backbones
    from vislearn.tasks.seg.modules import PRETRAIN_METHODS
    from vislearn.tasks.ssl.methods import get_method, list_methods

    print("methods:")
    for name in list_methods():
        doc = (get_method(name).__doc__ or "").strip().splitlines()[0]
        print(f"  {name:16s} {doc}")
    print("backbones:\n  " + ", ".join(list_backbones()))
    print("methods with their own command:")
    for cmd, what in (
        ("train-classifier --augment mra", "MRA: masked-reconstruction augmentation with an MAE"),
        ("seg pretrain --method " + "|".join(PRETRAIN_METHODS), "MDP segmentation pretraining"),
        ("train-uvos, video-seg", "SSL-UVOS: self-supervised video object segmentation"),
        ("dit sample|bench --cache POLICY", "DiT caching (DuCa): " + ", ".join(PRESETS)),
    ):
        print(f"  {cmd:48s} {what}")


def cmd_dit(a: argparse.Namespace) -> None:
    from vislearn.tasks.dit.cli import run_dit

    run_dit(a)


def cmd_seg(a: argparse.Namespace) -> None:
    from vislearn.tasks.seg.cli import run_seg

    run_seg(a)


def cmd_train_uvos(a: argparse.Namespace) -> None:
    from vislearn.tasks.vos.cli import run_train_uvos

    run_train_uvos(a)


def cmd_video_seg(a: argparse.Namespace) -> None:
    from vislearn.tasks.vos.cli import run_video_seg

    run_video_seg(a)


COMMANDS = {
    "pretrain": cmd_pretrain,
    "train-classifier": cmd_train_classifier,
    "mra-grid": cmd_mra_grid,
    "eval": cmd_eval,
    "export": cmd_export,
    "embed": cmd_embed,
    "demo": cmd_demo,
    "methods": cmd_methods,
    "dit": cmd_dit,
    "seg": cmd_seg,
    "train-uvos": cmd_train_uvos,
    "video-seg": cmd_video_seg,
}


def _quiet_lightning() -> None:
    """Hide Lightning/torch notices that are noise for a vislearn user."""
    import logging
    import warnings

    for pattern in (
        ".*LeafSpec.*",
        ".*smaller than the logging interval.*",
        ".*does not have many workers.*",
        ".*all_gather is deprecated.*",
        ".*across ranks is zero.*",
        r".*module\(s\) in eval mode.*",  # a frozen MAE (MRA) or teacher is meant to be
    ):
        warnings.filterwarnings("ignore", message=pattern)

    class _NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in record.getMessage()

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_NoTips())


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("pretrain", "eval", "train-classifier"):  # overrides anywhere
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _quiet_lightning()
    try:
        COMMANDS[args.command](args)
    except VislearnError as exc:
        print(f"vislearn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vislearn: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
