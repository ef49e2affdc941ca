"""``vislearn methods|eval|export|embed|mra-grid|demo``: listing, evaluating, exporting and
plotting backbones, and the end-to-end demo.

This module imports nothing heavy at import time (the main CLI builds its parser from it).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
from pathlib import Path
from typing import Any

from vislearn.core.errors import VislearnError
from vislearn.tasks.ssl.cli import CPU_BACKBONE, print_table

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


def addadd_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        "--ckpt",
        required=True,
        help="vislearn .ckpt / .safetensors, or external weights with --backbone",
    )
    p.add_argument("--backbone", help="backbone name for external weights")
    p.add_argument("--in-chans", type=int, help="input channels for external weights")


def add_methods_parser(sub: Any) -> None:
    """Register ``vislearn methods``."""
    sub.add_parser("methods", help="list available methods and backbones")


def add_mra_grid_parser(sub: Any) -> None:
    """Register ``vislearn mra-grid``."""
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


def add_eval_parser(sub: Any) -> None:
    """Register ``vislearn eval``."""
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
    addadd_checkpoint_args(ev)
    ev.add_argument(
        "--data",
        help="labelled dataset with a test split (default: the one the checkpoint was trained "
        "on, else fmnist-mini; video protocols: synthetic-motion, or a video folder with "
        "train/ and test/)",
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


def add_export_parser(sub: Any) -> None:
    """Register ``vislearn export``."""
    ex = sub.add_parser("export", help="export backbone weights to safetensors")
    addadd_checkpoint_args(ex)
    ex.add_argument("--out", required=True, help="output .safetensors file")


def add_embed_parser(sub: Any) -> None:
    """Register ``vislearn embed``."""
    em = sub.add_parser("embed", help="t-SNE plot of backbone features")
    addadd_checkpoint_args(em)
    em.add_argument(
        "--data", help="data set (default: the one the checkpoint was trained on, or fmnist-mini)"
    )
    em.add_argument("--data-dir")
    em.add_argument("--split", default="test", choices=["train", "test"])
    em.add_argument("--out", required=True, help="output PNG")


def add_demo_parser(sub: Any) -> None:
    """Register ``vislearn demo``."""
    de = sub.add_parser("demo", help="pretrain MoCo v2 on the embedded data, evaluate, plot")
    de.add_argument("--out", default="runs/demo")
    de.add_argument("--epochs", type=int, default=DEMO_EPOCHS)


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


def _same_dataset(a: str, b: str) -> bool:
    def key(name: str) -> str:
        p = Path(name).expanduser()
        return str(p.resolve()) if p.exists() else str(name).strip().lower()

    return key(a) == key(b)


def checkpoint_data(a: argparse.Namespace, default: str | None) -> None:
    """``a.data`` (and ``a.data_dir``) for a command reading ``a.checkpoint``: the data set
    the checkpoint was trained on when ``--data`` is not given (else ``default``), and a
    one-line warning on stderr when ``--data`` names another one."""
    import sys

    from vislearn.models.io import training_dataset

    trained = training_dataset(a.checkpoint)
    if a.data is None:
        if trained is None:
            a.data = default
            return
        a.data = trained[0]
        if a.data_dir is None:
            a.data_dir = trained[1]
        print(f"vislearn: using {a.data}, the data set {a.checkpoint} was trained on",
              file=sys.stderr)  # fmt: skip
    elif trained is not None and not _same_dataset(a.data, trained[0]):
        print(
            f"vislearn: warning: {a.checkpoint} was trained on {trained[0]}, not on {a.data}",
            file=sys.stderr,
        )


def _given(value, default):
    return default if value is None else value


def cmd_eval(a: argparse.Namespace) -> None:
    from vislearn.core.utils import write_json
    from vislearn.models.io import load_backbone
    from vislearn.tasks.ssl.run import evaluate, evaluate_fewshot, evaluate_semi

    if a.protocol in VIDEO_PROTOCOLS:
        return _eval_video(a)
    if a.overrides or a.config:
        raise VislearnError("--config and section.key=value apply to the video protocols only")
    if a.protocol == "semi" and a.fraction is None:
        raise VislearnError("eval semi needs --fraction, the labelled fraction in (0, 1]")
    if a.protocol == "semi" and not 0.0 < a.fraction <= 1.0:
        raise VislearnError(f"--fraction must be in (0, 1], got {a.fraction}")
    bb = load_backbone(a.checkpoint, a.backbone, in_chans=a.in_chans)
    checkpoint_data(a, "fmnist-mini")  # after the weights loaded: no notice before an error
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
    from vislearn.models.io import load_backbone
    from vislearn.tasks.ssl.run import evaluate_video

    data: dict = {}
    if not a.config:
        checkpoint_data(a, None)
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
    from vislearn.models.io import load_backbone
    from vislearn.tasks.ssl.run import read_backbone_spec, save_backbone

    bb = load_backbone(a.checkpoint, a.backbone, in_chans=a.in_chans)
    spec = read_backbone_spec(a.checkpoint) or {"backbone": a.backbone, "in_chans": a.in_chans}
    save_backbone(bb, a.out, spec)
    print(f"vislearn: wrote {a.out} ({len(bb.state_dict())} tensors)")


def cmd_embed(a: argparse.Namespace) -> None:
    from vislearn.data import get_dataset
    from vislearn.eval import extract_features, plot_embedding
    from vislearn.models.io import load_backbone
    from vislearn.tasks.ssl.run import backbone_in_chans

    bb = load_backbone(a.checkpoint, a.backbone, in_chans=a.in_chans)
    checkpoint_data(a, "fmnist-mini")
    ds = get_dataset(a.data, a.split, a.data_dir, channels=backbone_in_chans(bb))
    feats, labels = extract_features(bb, ds)
    if (labels < 0).all():
        labels = labels.clamp(min=0)
    plot_embedding(feats, labels, a.out, getattr(ds, "classes", None))
    print(f"vislearn: wrote {a.out}")


def cmd_demo(a: argparse.Namespace) -> None:
    """MoCo v2 on the embedded Fashion-MNIST subset, then kNN + linear eval and t-SNE."""
    import torch

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
    torch.manual_seed(cfg["seed"])  # the random-init row does not depend on training internals
    random_bb = create_backbone(
        CPU_BACKBONE["backbone"], in_chans=1, **CPU_BACKBONE["backbone_kwargs"]
    )
    for name, bb in (("random_init", random_bb), ("moco_v2", model.backbone)):
        rows.append({"name": name, **evaluate(bb, "fmnist-mini")})
    rows[-1]["images_per_s"] = stats["images_per_s"]
    print_table(
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


def _decorator_name(node: ast.expr) -> tuple[str, list[ast.expr]]:
    if isinstance(node, ast.Call):
        return _decorator_name(node.func)[0], list(node.args)
    return (node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")), []


def _sources(package: str) -> list[tuple[Path, ast.Module]]:
    root = Path(importlib.util.find_spec(package).submodule_search_locations[0])
    return [(f, ast.parse(f.read_text(), str(f))) for f in sorted(root.glob("*.py"))]


def registered(package: str, decorator: str) -> dict[str, str]:
    """``{name: first docstring sentence}`` of the classes / functions that ``package``'s modules
    register with ``@decorator`` (``@decorator("name")`` or, bare, under the function's
    name), read from the source without importing it (`vislearn methods` stays torch-free)."""
    out: dict[str, str] = {}
    for _, tree in _sources(package):
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef | ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                name, args = _decorator_name(dec)
                if name != decorator:
                    continue
                key = args[0].value if args and isinstance(args[0], ast.Constant) else node.name
                out[str(key)] = first_sentence(ast.get_docstring(node) or "")
    return out


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, whole (over line breaks): up to a
    full stop followed by a space or the end, or the whole paragraph."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    for i, ch in enumerate(paragraph):
        end = ch == "." and (i + 1 == len(paragraph) or paragraph[i + 1] == " ")
        if end and not paragraph[: i + 1].endswith(("e.g.", "i.e.", "vs.", "etc.")):
            return paragraph[: i + 1]
    return paragraph


def module_constant(module: str, name: str) -> Any:
    """A literal tuple / list constant (or a dict's keys) assigned at ``module``'s top level,
    read from its source without importing it."""
    path = Path(importlib.util.find_spec(module).origin)
    for node in ast.parse(path.read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            if isinstance(node.value, ast.Dict):
                return tuple(ast.literal_eval(k) for k in node.value.keys)
            return ast.literal_eval(node.value)
    raise LookupError(f"{module}.{name} not found")


def cmd_methods(a: argparse.Namespace) -> None:
    methods = registered("vislearn.tasks.ssl.methods", "register_method")
    backbones = registered("vislearn.models", "register_backbone")
    seg_methods = module_constant("vislearn.tasks.seg.modules", "PRETRAIN_METHODS")
    presets = module_constant("vislearn.accel.schedule", "PRESETS")
    print("methods:")
    for name in sorted(methods):
        print(f"  {name:16s} {methods[name]}")
    print("backbones:\n  " + ", ".join(sorted(backbones)))
    print("methods with their own command:")
    for cmd, what in (
        ("train-classifier --augment mra", "MRA: masked-reconstruction augmentation with an MAE"),
        ("seg pretrain --method " + "|".join(seg_methods), "MDP segmentation pretraining"),
        ("train-uvos, video-seg", "SSL-UVOS: self-supervised video object segmentation"),
        ("dit sample|bench --cache POLICY", "DiT caching (DuCa): " + ", ".join(presets)),
    ):
        print(f"  {cmd:48s} {what}")
