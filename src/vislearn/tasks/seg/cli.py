"""``vislearn seg ...``: multi-dataset segmentation pretraining (MDP), fine-tuning, mIoU.

vislearn seg pretrain --method mdp --datasets synthetic:fine,synthetic:coarse,synthetic:partial
vislearn seg pretrain --method naive_multi ...   |   --method single --datasets synthetic:fine
vislearn seg finetune --init runs/seg_mdp/pretrained.safetensors --target synthetic:fine
vislearn seg eval     --model runs/seg_finetune_fine --dataset synthetic:fine
vislearn seg predict  --model runs/seg_finetune_fine --out preds/ [--images DIR]
vislearn seg make-data --out data/seg_synth     (the synthetic sets as VOC-layout folders)

Every command reads a YAML recipe (--config, see configs/seg_mdp/), then its flags, then
``section.key=value`` overrides (positional, or --set KEY=VALUE anywhere).

This module imports nothing heavy at import time (the main CLI builds its parser from it).
"""

from __future__ import annotations

import argparse
from typing import Any

from vislearn.core.config import add_config_args

__all__ = ["SEG_FLAGS", "add_seg_parser", "check_seg_config", "run_seg", "seg_config"]

_FORMAT = argparse.RawDescriptionHelpFormatter


def _common(p: argparse.ArgumentParser) -> None:
    add_config_args(p, "model.*, data.*, trainer.*, eval.*", "YAML recipe (see configs/seg_mdp/)")
    p.add_argument("--image-size", type=int, help="image side (data.image_size, default 64)")
    p.add_argument("--num-train", type=int, help="synthetic train images per data set")
    p.add_argument("--num-test", type=int, help="synthetic test images per data set")
    p.add_argument("--cache-dir", help="keep rendered synthetic sets here (data.cache_dir)")
    p.add_argument("--seed", type=int)


def _training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="run folder")
    p.add_argument("--steps", type=int, help="optimiser steps (trainer.max_steps)")
    p.add_argument("--batch-size", type=int, help="batch size per device")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--backbone", help="backbone name, e.g. resnet_tiny, resnet18, resnet50")
    p.add_argument("--head", choices=["deeplabv3", "fcn"], help="segmentation head")
    p.add_argument("--output-stride", type=int, help="backbone output stride (dilation beyond)")
    p.add_argument("--accelerator", help="cpu, gpu, ... (Lightning)")
    p.add_argument("--devices", help="devices per node, e.g. 8 or auto (Lightning)")
    p.add_argument("--num-nodes", type=int, help="number of nodes (Lightning)")
    p.add_argument("--strategy", help="e.g. ddp (Lightning)")
    p.add_argument("--precision", help="32-true, 16-mixed, bf16-mixed (Lightning)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing last.ckpt")


def add_seg_parser(sub: Any) -> None:
    """Register ``vislearn seg {pretrain,finetune,eval,predict,make-data}``."""
    seg = sub.add_parser(
        "seg",
        help="semantic segmentation: multi-dataset pretraining (MDP), fine-tuning, mIoU",
        description="Semantic segmentation across data sets with different taxonomies.\n\n"
        + __doc__.split("\n\n")[1]
        + "\n\nRun `vislearn seg SEG_COMMAND --help` for the options of a command.",
        formatter_class=_FORMAT,
    )
    ssub = seg.add_subparsers(dest="seg_command", required=True, metavar="SEG_COMMAND")

    pre = ssub.add_parser(
        "pretrain",
        help="pretrain a segmentation network on several data sets",
        formatter_class=_FORMAT,
        description="Pretrain on the data sets of data.datasets over their concatenated label "
        "spaces.\n  mdp          pixel-to-prototype contrast over all classes of all data "
        "sets, prototype\n               moving averages, cross-dataset region + pixel "
        "mixing, sparse coding\n  naive_multi  the same data, cross-entropy with one head "
        "per data set\n               (model.naive_mode=merged: one head over all classes)\n"
        "  single       cross-entropy on one data set\n"
        "Writes OUT/pretrained.safetensors for `vislearn seg finetune --init`. Example:\n"
        "  vislearn seg pretrain --method mdp --config configs/seg_mdp/pretrain_mdp.yaml "
        "model.temperature=0.2",
    )
    pre.add_argument("--method", choices=["mdp", "naive_multi", "single"])
    pre.add_argument(
        "--datasets",
        help="comma-separated specs: synthetic:fine|coarse|partial or VOC-layout folders",
    )
    pre.add_argument(
        "--fractions",
        help="labelled fraction kept per data set, e.g. fine=0.1 (others 1)",
    )
    _common(pre)
    _training(pre)

    ft = ssub.add_parser(
        "finetune",
        help="fine-tune on one target data set with its own head (or train from scratch)",
        formatter_class=_FORMAT,
        description="Fine-tune a pretrained network (--init) on --target with a new "
        "classifier, then report mIoU on its test split (OUT/metrics.json) and write "
        "OUT/model.safetensors. Without --init the network starts from random weights. The "
        "architecture is read from --init unless model.* keys say otherwise. Example:\n"
        "  vislearn seg finetune --init runs/seg_mdp/pretrained.safetensors "
        "--target synthetic:coarse --fraction 0.1",
    )
    ft.add_argument("--init", help="pretrained weights (pretrained.safetensors, backbone file)")
    ft.add_argument(
        "--transfer",
        choices=["backbone", "backbone+decoder"],
        help="what to take from --init (default backbone+decoder)",
    )
    ft.add_argument(
        "--freeze",
        choices=["none", "backbone", "backbone+decoder"],
        help="keep these fixed (batch-norm statistics too); backbone+decoder = a per-pixel "
        "linear probe of the pretrained features (default none)",
    )
    ft.add_argument("--target", help="data set spec (default synthetic:fine)")
    ft.add_argument("--fraction", type=float, help="labelled fraction of the target train split")
    ft.add_argument(
        "--val-fraction",
        type=float,
        help="share of the labelled images held out for model selection: validated every "
        "trainer.val_every_n_epochs, the test scores are the best validated weights' (default 0)",
    )
    _common(ft)
    _training(ft)

    ev = ssub.add_parser(
        "eval",
        help="mIoU (ignore index excluded) of a fine-tuned model on a test split",
        formatter_class=_FORMAT,
        description="Print (and with --json write) mIoU, pixel accuracy and per-class IoU.",
    )
    ev.add_argument("--model", "--ckpt", required=True, help="model.safetensors or its run folder")
    ev.add_argument("--dataset", help="data set spec (default data.target)")
    ev.add_argument("--json", help="also write the scores to this file")
    ev.add_argument("--device", default="cpu")
    _common(ev)

    pr = ssub.add_parser(
        "predict",
        help="colourised predictions (palette PNGs and an image|truth|prediction grid)",
        formatter_class=_FORMAT,
    )
    pr.add_argument("--model", "--ckpt", required=True, help="model.safetensors or its run folder")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--dataset", help="data set spec (default data.target)")
    pr.add_argument("--images", help="a folder of plain images instead (no ground truth)")
    pr.add_argument("-n", "--n", type=int, help="number of images (default eval.num_predictions)")
    pr.add_argument("--device", default="cpu")
    _common(pr)

    md = ssub.add_parser(
        "make-data",
        help="write the synthetic segmentation sets as VOC-layout folders",
        formatter_class=_FORMAT,
        description="Render synthetic sets (Fashion-MNIST items on photos, per-pixel labels "
        "in each set's taxonomy) to OUT/<name>/{JPEGImages,SegmentationClass,ImageSets/"
        "Segmentation/{train,val}.txt,classes.txt}; readable back as data set folders.",
    )
    md.add_argument("--out", required=True, help="output folder")
    md.add_argument("--datasets", help="comma-separated synthetic names (default all)")
    _common(md)


#: flag -> config key of every ``vislearn seg`` command (a command lacking a flag skips it)
SEG_FLAGS: dict[str, str] = {
    "lr": "model.lr",
    "backbone": "model.backbone",
    "head": "model.head",
    "output_stride": "model.output_stride",
    "image_size": "data.image_size",
    "num_train": "data.num_train",
    "num_test": "data.num_test",
    "cache_dir": "data.cache_dir",
    "batch_size": "data.batch_size",
    "target": "data.target",
    "fraction": "data.fraction",
    "steps": "trainer.max_steps",
    "accelerator": "trainer.accelerator",
    "devices": "trainer.devices",
    "strategy": "trainer.strategy",
    "precision": "trainer.precision",
    "num_nodes": "trainer.num_nodes",
    "method": "method",
    "init": "init",
    "transfer": "transfer",
    "freeze": "model.freeze",
    "val_fraction": "data.val_fraction",
    "seed": "seed",
}


def _list_flags(a: argparse.Namespace) -> dict:
    """``--datasets`` and ``--fractions``: comma-separated lists -> data.datasets / fractions."""
    from vislearn.core.errors import VislearnError

    data: dict = {}
    if getattr(a, "datasets", None):
        specs = [s.strip() for s in a.datasets.split(",") if s.strip()]
        if a.seg_command == "make-data":
            specs = [s if s.startswith("synthetic:") else f"synthetic:{s}" for s in specs]
        data["datasets"] = specs
    if getattr(a, "fractions", None):
        fractions = {}
        for item in a.fractions.split(","):
            key, sep, value = item.partition("=")
            try:
                fractions[key.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise VislearnError(f"--fractions: expected NAME=FRACTION items, got {item!r}")
        data["fractions"] = fractions
    return data


def seg_config(a: argparse.Namespace) -> dict:
    """The resolved config of a ``vislearn seg`` command: :data:`SEG_DEFAULTS` <- --config <-
    flags (:data:`SEG_FLAGS`, --datasets, --fractions, --out) <- overrides (positional and
    --set)."""
    from vislearn.core.config import flag_updates, load_config
    from vislearn.tasks.seg.config import SEG_DEFAULTS

    updates = flag_updates(a, SEG_FLAGS)
    data = _list_flags(a)
    if data:
        updates["data"] = {**updates.get("data", {}), **data}
    if a.seg_command in ("pretrain", "finetune") and a.out is not None:
        updates["out"] = a.out  # (predict and make-data use --out for their own output)
    return load_config(
        a.config, list(a.overrides) + list(a.set_overrides), defaults=SEG_DEFAULTS, **updates
    )


def _print_scores(res: dict) -> None:
    print(
        f"mIoU {100 * res['miou']:.2f}  pixel acc {100 * res['pixel_acc']:.2f}  "
        f"mean acc {100 * res['mean_acc']:.2f}"
    )
    for name, iou in res["iou"].items():
        print(f"  {name:24s} {'-' if iou is None else f'{100 * iou:.2f}'}")


def check_seg_config(cfg: dict, cmd: str) -> dict:
    """Types and ranges of ``cfg``, the model keys of a training command, its data set specs,
    hardware flags and output folder: all checked before anything is rendered or written."""
    from vislearn.core.schema import check_run_settings, validate_config
    from vislearn.tasks.seg.config import SEG_DEFAULTS
    from vislearn.tasks.seg.data import check_spec, spec_name

    model_class = None
    if cmd in ("pretrain", "finetune"):
        from vislearn.tasks.seg.modules import SegFinetuneModule, SegPretrainModule

        model_class = SegPretrainModule if cmd == "pretrain" else SegFinetuneModule
    validate_config(cfg, SEG_DEFAULTS, model_class)
    d = cfg["data"]
    if cmd in ("pretrain", "finetune"):
        _check_choices(cfg, cmd)
    specs = list(d["datasets"] or []) if cmd in ("pretrain", "make-data") else []
    if cmd == "finetune" and d["target"]:
        specs.append(d["target"])
    for spec in specs:
        check_spec(spec)
    if cmd == "pretrain":
        check_run_settings(cfg["trainer"], cfg["out"] or f"runs/seg_{cfg['method']}")
    elif cmd == "finetune":
        default = f"runs/seg_finetune_{spec_name(str(d['target']))}"
        check_run_settings(cfg["trainer"], cfg["out"] or default)
    return cfg


def _check_choices(cfg: dict, cmd: str) -> None:
    """The string options and the validation settings, before anything is built or written."""
    from vislearn.tasks.seg.base import check_choice
    from vislearn.tasks.seg.data import validation_settings
    from vislearn.tasks.seg.modules import CONTRAST_OVER, FREEZE_CHOICES

    model = cfg.get("model") or {}
    name, choices = (
        ("freeze", FREEZE_CHOICES) if cmd == "finetune" else ("contrast_over", CONTRAST_OVER)
    )
    if name in model:
        check_choice(f"model.{name}", model[name], choices)
    if cmd == "finetune":
        validation_settings(cfg["data"])


def run_seg(a: argparse.Namespace) -> None:
    """Run the ``vislearn seg`` sub-command parsed into ``a``."""
    cmd = a.seg_command
    cfg = check_seg_config(seg_config(a), cmd)
    if getattr(a, "dataset", None):
        from vislearn.tasks.seg.data import check_spec

        check_spec(a.dataset)
    if cmd == "pretrain":
        from vislearn.tasks.seg.run import pretrain_seg

        _, out = pretrain_seg(cfg, resume=not a.no_resume)
        print(f"vislearn: wrote {out / 'pretrained.safetensors'}")
    elif cmd == "finetune":
        from vislearn.tasks.seg.run import finetune_seg

        _, out, scores = finetune_seg(cfg, resume=not a.no_resume)
        _print_scores(scores)
        print(f"vislearn: wrote {out / 'model.safetensors'} and {out / 'metrics.json'}")
    elif cmd == "eval":
        from vislearn.tasks.seg.run import evaluate_seg

        res = evaluate_seg(a.model, cfg, a.dataset, a.device, a.json)
        _print_scores(res)
        if a.json:
            print(f"vislearn: wrote {a.json}")
    elif cmd == "predict":
        from vislearn.tasks.seg.run import predict_seg

        paths = predict_seg(a.model, cfg, a.out, a.dataset, a.images, a.n, a.device)
        print(f"vislearn: wrote {len(paths) - 1} predictions and {paths[-1]}")
    elif cmd == "make-data":
        from pathlib import Path

        from vislearn.data.segmentation import write_segmentation_folder
        from vislearn.tasks.seg.data import build_segmentation_dataset, spec_name

        for spec in cfg["data"]["datasets"]:
            root = Path(a.out) / spec_name(spec)
            for split, name in (("train", "train"), ("test", "val")):
                ds = build_segmentation_dataset(spec, split, cfg["data"])
                write_segmentation_folder(ds, root, name)
            print(f"vislearn: wrote {root}")
