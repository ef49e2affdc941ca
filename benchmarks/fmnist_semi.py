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

    python benchmarks/fmnist_semi.py --seeds 0 1 2 --jobs 2
    python benchmarks/fmnist_semi.py --report-only

Jobs run on :func:`vislearn.bench.run_jobs`: finished runs are cached under --cache by the hash
of their resolved recipe and seed, so an interrupted benchmark resumes and a changed recipe
runs again. Rows: mean, per-seed values, 95 % t interval, and the paired (same seed)
difference against ``supervised_<fraction>``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

from vislearn.bench import Job, aggregate, run_jobs
from vislearn.bench import write_results as write_json_results

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

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


def recipe(name: str, epochs: int) -> dict:
    """The resolved recipe of row ``name`` (its ``seed`` and ``out`` are the job's)."""
    from vislearn.core.config import load_config

    overrides = {
        "trainer": {"max_epochs": epochs, "check_val_every_n_epoch": epochs, "progress": False},
    }
    if name == "moco_v2":
        cfg = load_config(ROOT / "configs" / "fmnist_ssl" / "moco_v2.yaml", **overrides)
    else:
        base = name
        for ablation, model in ABLATIONS.items():
            if name.startswith(ablation):
                base = name.replace(ablation, "sscl")
                overrides["model"] = model
        cfg = load_config(ROOT / "configs" / "fmnist_semi" / f"{base}.yaml", **overrides)
    cfg.pop("seed")
    cfg.pop("out")
    return cfg


def make_jobs(a: argparse.Namespace) -> list[Job]:
    """The job table: MoCo v2 (pretrain + fine-tunes) and every trained row at each
    fraction for --seeds, the SsCL ablations at 1 % for --ablation-seeds; longest first."""
    names = []
    for seed in a.seeds:
        names.append(("moco_v2", seed))
        names += [(f"{m}_{tag}", seed) for m in TRAINED for tag in FRACTIONS]
    names += [(f"{n}_1pct", seed) for seed in a.ablation_seeds for n in ABLATIONS]
    names.sort(key=lambda ns: -COST.get(ns[0].split("_")[0], 1))
    fn = "fmnist_semi:run_semi_job"
    return [
        Job(n, seed, {"method": n, "epochs": a.epochs, "recipe": recipe(n, a.epochs)}, fn)
        for n, seed in names
    ]


def run_semi_job(config: dict, seed: int, ctx: dict) -> dict:
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

    job = {"method": config["method"], "epochs": config["epochs"], "seed": seed}
    cfg = {**config["recipe"], "seed": seed}
    L.seed_everything(seed, verbose=False)
    dm = build_datamodule(cfg)
    model = build_from_config(cfg, dm)
    tp = Throughput()
    t0 = time.perf_counter()
    trainer = build_trainer(ctx["run_dir"], callbacks=[tp], **cfg["trainer"])
    trainer.fit(model, datamodule=dm)
    out = {"images_per_s": tp.images_per_s, "train_seconds": tp.seconds}

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
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ablation-seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="concurrent runs (threads each = 1)")
    p.add_argument("--cache", default=str(BENCH / ".cache" / "fmnist_semi"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_semi.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    a = p.parse_args()

    done = run_jobs(make_jobs(a), a.cache, a.jobs, report_only=a.report_only,
                    import_paths=[BENCH], show=("top1", "images_per_s"))  # fmt: skip
    write_results(done, a)


def rows_of(record: dict) -> dict[str, dict]:
    """The result rows one cached run contributes: ``{row name: metrics}``."""
    rows = {}
    name = record["config"]["method"]
    run = record["metrics"]
    fewshot_name = "moco_v2" if name == "moco_v2" else name
    for key, value in run.items():
        if key.startswith("fewshot_"):
            rows[f"fewshot/{fewshot_name}/{key.removeprefix('fewshot_')}"] = dict(value)
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


def _numeric(records: list[dict]) -> list[str]:
    keys = {k: None for r in records for k, v in r["metrics"].items() if k != "finetune_lr"}
    return [k for k in keys if any(isinstance(r["metrics"].get(k), int | float) for r in records)]


def write_results(runs: list[dict], a: argparse.Namespace) -> None:
    import torch

    records = [  # one pseudo-record per (result row, seed)
        {"name": name, "seed": run["seed"], "metrics": metrics}
        for run in runs
        for name, metrics in rows_of(run).items()
    ]
    rows = []
    for tag in FRACTIONS:  # each fraction's rows paired against its supervised row
        group = [r for r in records if r["name"].endswith(f"_{tag}")]
        rows += aggregate(group, _numeric(group), baseline=f"supervised_{tag}")
    rest = [r for r in records if not any(r["name"].endswith(f"_{t}") for t in FRACTIONS)]
    rows += aggregate(rest, _numeric(rest))
    for row in rows:  # the fine-tuning lr picked per seed (not a number to average)
        lrs = [r["metrics"]["finetune_lr"] for r in records
               if r["name"] == row["name"] and "finetune_lr" in r["metrics"]]  # fmt: skip
        if lrs:
            row["finetune_lr_per_seed"] = lrs

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
        "intervals": "mean over seeds; *_ci95 (of a row's seeds): Student-t 95 % interval; "
        "*_diff: paired (same seed) difference against supervised_<fraction>; the few-shot "
        "rows' prototype_ci95/logistic_ci95 are their episodes' intervals, averaged over seeds",
    }
    write_json_results(a.out, "fmnist_semi", settings, rows)
    print(f"wrote {a.out}")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
