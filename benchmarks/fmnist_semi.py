"""Fashion-MNIST semi-supervised benchmark at 1 % and 10 % of the labels: supervised-only,
MoCo v2 pretrain + fine-tune, FixMatch-style pseudo-labelling and SsCL, plus 5-way few-shot
accuracy of their backbones -> docs/results/fmnist_semi.json.

Every row spends the same training budget: 4 epochs of 234 steps of 256 images (the
``configs/fmnist_ssl`` backbone and optimiser). ``supervised``, ``pseudolabel`` and ``sscl``
train their ``configs/fmnist_semi/<row>.yaml`` recipe and are scored by their own linear
classifier head. ``moco_v2_finetune`` pretrains ``configs/fmnist_ssl/moco_v2.yaml`` on the
unlabelled images for the same 4 epochs, then fine-tunes the whole backbone with a linear head
on the labelled subset (:func:`~vislearn.eval.semi.semi_supervised_finetune`) for as many
steps of 256 labelled images as the supervised row takes (936), at two learning rates (0.02,
the protocol default, and 0.06, the supervised recipe's); the row reports the better one,
both are stored. The labelled subset is the seeded class-balanced one of ``label_seed`` 0 for
every row and training seed. Top-1 is on the full 10k test set.

Few-shot rows: N-way K-shot episodes (600, 15 queries per class, prototype and logistic
regression classifiers on frozen pooled features, mean and 95 % interval) drawn from the test
split. All ten classes were seen in training (with 1 % of their labels for the semi-supervised
backbones), so these are not novel-class episodes; the MoCo v2 backbone never saw a label.

    python benchmarks/fmnist_semi.py --seeds 0 --jobs 2
    python benchmarks/fmnist_semi.py --report-only

Finished runs are cached under --cache (one JSON per run), so an interrupted benchmark
resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fmnist_ssl import run_pending  # noqa: E402

FRACTIONS = {"1pct": 0.01, "10pct": 0.1}
TRAINED = ("supervised", "pseudolabel", "sscl")  # each has configs/fmnist_semi/<m>_<frac>.yaml
ROW_ORDER = ("supervised", "moco_v2_finetune", "pseudolabel", "sscl")
# SsCL ablations at 1 %: each switches one direction of the co-calibration off
ABLATIONS = {
    "sscl_no_calibration": {"calib_mode": "none"},  # contrastive -> CE direction off
    "sscl_no_class_positives": {"instance_weight": 1.0},  # CE -> contrastive direction off
}
FINETUNE_LRS = (0.02, 0.06)
FEWSHOT = {"ways": 5, "shots": (1, 5), "queries": 15, "episodes": 600}
# rough cost per run, to start the longest first
COST = {"moco": 3, "sscl": 2, "pseudolabel": 1.5}


def recipe(job: dict) -> dict:
    from vislearn.core.config import load_config

    name = job["method"]
    overrides = {
        "seed": job["seed"],
        "trainer": {
            "max_epochs": job["epochs"],
            "check_val_every_n_epoch": job["epochs"],
            "progress": False,
        },
    }
    if name == "moco_v2":
        return load_config(ROOT / "configs" / "fmnist_ssl" / "moco_v2.yaml", **overrides)
    base = name
    for ablation, model in ABLATIONS.items():
        if name.startswith(ablation):
            base = name.replace(ablation, "sscl")
            overrides["model"] = model
    return load_config(ROOT / "configs" / "fmnist_semi" / f"{base}.yaml", **overrides)


def run_semi_job(job: dict) -> dict:
    """Train one row's recipe (or the MoCo v2 pretraining, then its fine-tunes) and score it;
    runs in a worker process."""
    import lightning as L
    import torch

    from vislearn.data.datasets import get_dataset
    from vislearn.engine.trainer import Throughput, build_trainer
    from vislearn.eval.fewshot import few_shot_eval
    from vislearn.eval.semi import semi_supervised_finetune
    from vislearn.ops.features import extract_features
    from vislearn.tasks.ssl.run import build_datamodule, build_from_config

    torch.set_num_threads(job["threads"])
    cfg = recipe(job)
    L.seed_everything(job["seed"], verbose=False)
    dm = build_datamodule(cfg)
    model = build_from_config(cfg, dm)
    tp = Throughput()
    t0 = time.perf_counter()
    trainer = build_trainer(
        Path(job["cache"]) / "runs" / job["key"], callbacks=[tp], **cfg["trainer"]
    )
    trainer.fit(model, datamodule=dm)
    out = {**job, "images_per_s": tp.images_per_s, "train_seconds": tp.seconds}

    train = get_dataset("fmnist", "train")
    test = get_dataset("fmnist", "test")
    feats, labels = extract_features(model.backbone, test)
    for k in FEWSHOT["shots"]:
        out[f"fewshot_5w{k}s"] = few_shot_eval(
            feats,
            labels,
            FEWSHOT["ways"],
            k,
            FEWSHOT["queries"],
            FEWSHOT["episodes"],
            seed=job["seed"],
        )
    if job["method"] == "moco_v2":
        steps = job["epochs"] * (len(train) // 256)  # the supervised row's labelled steps
        for tag, fraction in FRACTIONS.items():
            per_epoch = round(fraction * len(train)) // 256
            for lr in FINETUNE_LRS:
                out[f"finetune_{tag}_lr{lr:g}"] = semi_supervised_finetune(
                    model.backbone,
                    train,
                    test,
                    fraction,
                    seed=0,
                    epochs=math.ceil(steps / per_epoch),
                    lr=lr,
                    batch_size=256,
                )
    else:
        head = torch.nn.Sequential(model.backbone, model.classifier)
        logits, labels = extract_features(head, test)
        out["top1"] = 100 * (logits.argmax(1) == labels).float().mean().item()
        if hasattr(model, "momentum_classifier"):  # the EMA teacher, for reference
            ema = torch.nn.Sequential(model.momentum_backbone, model.momentum_classifier)
            logits, labels = extract_features(ema, test)
            out["ema_top1"] = 100 * (logits.argmax(1) == labels).float().mean().item()
        mask = trainer.callback_metrics.get("train/mask_rate")
        if mask is not None:
            out["last_mask_rate"] = float(mask)
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--ablation-seeds", type=int, nargs="*", default=[0])
    p.add_argument("--jobs", type=int, default=2, help="concurrent runs (threads each = 1)")
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache" / "fmnist_semi"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_semi.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    a = p.parse_args()

    jobs = []
    for seed in a.seeds:
        jobs.append({"impl": "semi", "method": "moco_v2", "seed": seed})
        for m in TRAINED:
            for tag in FRACTIONS:
                jobs.append({"impl": "semi", "method": f"{m}_{tag}", "seed": seed})
    for seed in a.ablation_seeds:
        for name in ABLATIONS:
            jobs.append({"impl": "semi", "method": f"{name}_1pct", "seed": seed})
    jobs.sort(key=lambda j: -COST.get(j["method"].split("_")[0], 1))  # longest first
    seeds = sorted({*a.seeds, *a.ablation_seeds})
    done = run_pending(
        jobs, a.epochs, "fmnist", seeds, Path(a.cache), a.jobs, a.report_only, run_semi_job
    )
    write_results(done, a)


def rows_of(run: dict) -> dict[str, dict]:
    """The result rows one cached run contributes: ``{row name: metrics}``."""
    rows = {}
    name = run["method"]
    fewshot_name = "moco_v2" if name == "moco_v2" else name
    for key, value in run.items():
        if key.startswith("fewshot_"):
            rows[f"fewshot/{fewshot_name}/{key.removeprefix('fewshot_')}"] = value
    if name == "moco_v2":
        for tag in FRACTIONS:
            tries = {
                lr: 100 * run[f"finetune_{tag}_lr{lr:g}"]["semi_top1"] for lr in FINETUNE_LRS
            }  # fraction -> %
            best = max(tries, key=tries.get)
            rows[f"moco_v2_finetune_{tag}"] = {
                "top1": tries[best],
                "finetune_lr": best,
                **{f"top1_lr{lr:g}": v for lr, v in tries.items()},
                "finetune_steps": run[f"finetune_{tag}_lr{best:g}"]["steps"],
            }
    else:
        rows[name] = {k: run[k] for k in ("top1", "ema_top1", "last_mask_rate") if k in run}
    for r in rows.values():
        r["images_per_s"] = run["images_per_s"]
    return rows


def write_results(runs: list[dict], a: argparse.Namespace) -> None:
    import torch

    from vislearn.core.utils import write_json

    per_seed: dict[str, dict[int, dict]] = {}
    for run in runs:
        for name, metrics in rows_of(run).items():
            per_seed.setdefault(name, {})[run["seed"]] = metrics
    rows = []
    for name, by_seed in per_seed.items():
        seeds = sorted(by_seed)
        row: dict = {"name": name, "seeds": seeds}
        for m in by_seed[seeds[0]]:
            vals = [by_seed[s].get(m) for s in seeds]
            if m != "finetune_lr" and all(isinstance(v, int | float) for v in vals):
                row[m] = round(statistics.mean(vals), 2)
                if len(vals) > 1:
                    row[f"{m}_per_seed"] = [round(v, 2) for v in vals]
            else:
                row[f"{m}_per_seed"] = vals
        rows.append(row)

    def order(r: dict) -> tuple:
        name = r["name"]
        if name.startswith("fewshot/"):
            return (2, name)
        for i, base in enumerate(ROW_ORDER):
            for j, tag in enumerate(FRACTIONS):
                if name == f"{base}_{tag}":
                    return (0, j, i)
        return (1, name)

    rows.sort(key=order)
    settings = {
        "data": "Fashion-MNIST, train 60k / test 10k, 28x28 grayscale; labelled subset: seeded "
        "class-balanced (data.label_fraction, label_seed 0): 600 images at 1 %, 6,000 at 10 %",
        "epochs": a.epochs,
        "steps_per_epoch": 234,
        "batch_size": "256 (semi-supervised rows: 64 labelled + 192 unlabelled rows)",
        "seeds": a.seeds,
        "ablation_seeds": a.ablation_seeds,
        "backbone": "resnet_tiny (stem small_ds, width 16; 77k params, 64-d features)",
        "optimizer": "SGD momentum 0.9, lr 0.06, wd 5e-4 (none on norms/biases), cosine",
        "top1": "test top-1 (%) of the row's classifier head (the online network, not the EMA "
        "teacher; ema_top1 gives the teacher's)",
        "moco_v2_finetune": f"4-epoch MoCo v2 pretraining, then whole-network fine-tuning with "
        f"a linear head: SGD, batch 256, crop 0.5-1 + flip, cosine, for the supervised row's "
        f"936 labelled steps, lr in {list(FINETUNE_LRS)} (best reported, both stored)",
        "fewshot": f"{FEWSHOT['ways']}-way {list(FEWSHOT['shots'])}-shot, "
        f"{FEWSHOT['queries']} queries/class, {FEWSHOT['episodes']} episodes from the test "
        "split, frozen pooled features; prototype (cosine to class means) and logistic "
        "regression; mean and 95 % interval. Classes are not novel (see docs/RESULTS.md)",
        "ablations": {f"{k}_1pct": v for k, v in ABLATIONS.items()},
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, torch "
        f"{torch.__version__}, no GPU; two runs at a time, one thread each",
    }
    write_json(a.out, {"benchmark": "fmnist_semi", "settings": settings, "rows": rows})
    print(f"wrote {a.out}")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
