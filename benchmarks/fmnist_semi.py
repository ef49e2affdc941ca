"""Fashion-MNIST semi-supervised benchmark at 1 % and 10 % of the labels: supervised-only,
MoCo v2 pretrain + fine-tune, FixMatch-style pseudo-labelling and SsCL under equal labelled
exposure, plus 5-way few-shot accuracy of their backbones -> docs/results/fmnist_semi.json.

Protocol (issue 22: equal exposure, validation-picked learning rates, three seeds):

* **Equal labelled exposure, equal steps.** Every row trains for the same ``--epochs`` x
  ``--batches`` = 10 x 200 = 2,000 optimiser steps (``trainer.max_epochs`` x
  ``trainer.limit_train_batches`` of ``configs/base/fmnist_semi.yaml``), and every step holds
  the same 64 images of the labelled subset (128,000 labelled draws: 213 passes over the 600
  images at 1 %, 21 over the 6,000 at 10 %). ``supervised`` has nothing more (batch 64);
  ``pseudolabel`` and ``sscl`` add 192 unlabelled images per step on top (FixMatch's mu = 3,
  batch 256). ``moco_v2_finetune`` spends the two streams one after the other: MoCo v2
  (``configs/fmnist_ssl/moco_v2.yaml``, lr 0.06, not tuned) pretrains for 2,000 steps of 192
  images without labels (the semi-supervised rows' unlabelled share), then the whole backbone
  and a linear head are fine-tuned for 2,000 steps of 64 labelled images (the supervised row's
  steps and batches, the same crop 0.5-1 + flip view, SGD momentum 0.9, wd 5e-4, cosine). So
  every row sees 2,000 x 64 labelled images, and the MoCo row sees as many images in all as the
  semi-supervised rows, in 2 x 2,000 smaller steps.
* **Validation split, learning rates.** 5,000 training images (500 per class, seeded,
  ``VAL``) outside the 10 % labelled subset (so outside the nested 1 % one too) are held out of
  every row's training (the unlabelled stream, the MoCo pretraining:
  ``ImageDataModule(exclude=...)``) and keep their labels for model selection only. Each row
  picks its learning rate from ``LR_GRID`` by the validation top-1 of its classifier after
  training with seed 0; seeds 1 and 2 reuse the pick (seed 0's run at the picked rate is its
  result). Supervised training gets the widest grid (0.015-0.24), SsCL and pseudo-labelling
  0.03-0.24 (cost), the fine-tune 0.015-0.12 (its pick, 0.06, was inside); a pick at a grid
  edge is flagged. The first 3-seed run stopped at 0.12 and 3 of the 4 rows at 10 % (and SsCL
  at 1 %) picked that edge, hence the 0.24 points. The test set is only scored, never
  selected on.
* **Seeds and intervals.** Seeds 0 1 2 (training seed; the labelled subset is label_seed 0's
  for every row and seed, the validation split is fixed). Rows: mean, per-seed values, 95 %
  Student-t interval, the paired (same seed) difference against ``supervised_<fraction>``
  (ablations: against ``sscl_1pct``), and in the SsCL rows ``top1_vs``: SsCL's paired
  difference against every other row of its fraction. docs/RESULTS.md claims a win only where
  a paired interval excludes zero.
* **Ablations (1 %, seeds 0 1 2, at SsCL's picked rate)**: ``sscl_no_calibration``
  (``calib_mode=none``) and ``sscl_no_class_positives`` (``instance_weight=1``).

Few-shot rows: N-way K-shot episodes (600, 15 queries per class, prototype and logistic
regression classifiers on frozen pooled features, mean and 95 % interval) drawn from the test
split. All ten classes were seen in training (with 1 % of their labels for the semi-supervised
backbones), so these are not novel-class episodes; the MoCo v2 backbone never saw a label.

**Cost** (measured on the benchmark machine, 2 cores, two runs at a time with one thread
each; wall time per run incl. start-up, scoring and few-shot episodes): ``sscl`` 235-260 s,
``pseudolabel`` 220-250 s, MoCo v2 pretraining at batch 192 ~980 s, ``supervised`` 40-50 s,
a fine-tune 45-50 s. Jobs: 26 learning-rate runs on seed 0 (5 + 4 + 4 per fraction), 12 runs
of seeds 1-2, 6 ablation runs, 3 MoCo pretrainings, 12 fine-tunes. The first 3-seed run (grids
up to 0.12: 20 seed-0 runs) took 67 min; the six 0.24 points add ~9 min, and every pick that
moves reruns its seeds 1-2 (and the ablations, if SsCL's 1 % pick moves): ~75-100 min in all.
We chose three seeds and 2,000 steps (twice the old 936) over a longer schedule with fewer
seeds; ``--ablation-seeds 0`` saves ~10 min.

    python benchmarks/fmnist_semi.py --jobs 2            # seeds 0 1 2, ~1.5 h on 2 cores
    python benchmarks/fmnist_semi.py --report-only
    python benchmarks/fmnist_semi.py --smoke --jobs 0    # end-to-end check, ~20 s

Jobs run on :func:`vislearn.bench.run_jobs` in three phases (seed 0's grids and the MoCo
pretrainings; the other seeds, the ablations and the fine-tuning grid; the other seeds'
fine-tunes): finished runs are cached under --cache by the hash of their resolved recipe and
seed, so an interrupted benchmark resumes and a changed recipe runs again.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from vislearn.bench import Job, aggregate, rounded_paired_diff, run_jobs, run_seconds
from vislearn.bench import write_results as write_json_results

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

FRACTIONS = {"1pct": 0.01, "10pct": 0.1}
TRAINED = ("supervised", "pseudolabel", "sscl")  # each has configs/fmnist_semi/<m>_<frac>.yaml
FINETUNE = "moco_v2_finetune"
ROW_ORDER = ("supervised", FINETUNE, "pseudolabel", "sscl")
# SsCL ablations at 1 %: each switches one direction of the co-calibration off
ABLATIONS = {
    "sscl_no_calibration": {"calib_mode": "none"},  # contrastive -> CE direction off
    "sscl_no_class_positives": {"instance_weight": 1.0},  # CE -> contrastive direction off
}
LABELLED = 64  # labelled images per step, every row
UNLABELLED = 192  # unlabelled images per step: the semi-supervised rows and MoCo pretraining
LR_GRID = {  # picked per row and fraction on the validation split, seed 0
    "supervised": (0.015, 0.03, 0.06, 0.12, 0.24),
    FINETUNE: (0.015, 0.03, 0.06, 0.12),
    "pseudolabel": (0.03, 0.06, 0.12, 0.24),
    "sscl": (0.03, 0.06, 0.12, 0.24),
}
LABEL_SEED = 0
# the metrics of a result row (mean, per seed, interval, paired difference)
METRICS = ("top1", "val_top1", "ema_top1", "last_mask_rate", "images_per_s")
VAL = {"per_class": 500, "seed": 1}  # held-out validation split of the training images
FEWSHOT = {"ways": 5, "shots": (1, 5), "queries": 15, "episodes": 600}
WEIGHT_DECAY = 5e-4
# cost per run relative to ``supervised`` (measured wall time; the longest start first)
COST = {"sscl": 5.5, "moco_v2": 22, "pseudolabel": 5.2, FINETUNE: 1.05, "supervised": 1}
# --smoke: the embedded 5k/1k subset, the 1 % rows, 2 steps per run, two-point grids, two
# seeds, few episodes (about 20 s on an idle core)
SMOKE = {"dataset": "fmnist-mini", "epochs": 1, "batches": 2, "val_per_class": 10,
         "episodes": 5, "seeds": [0, 1], "ablation_seeds": [0], "grid_points": 2,
         "fractions": ["1pct"]}  # fmt: skip


def lr_grid(row: str, a: argparse.Namespace) -> tuple[float, ...]:
    grid = LR_GRID[row]
    return grid[: a.grid_points] if a.grid_points else grid


def base_of(row: str) -> str:
    """The method of a row: ``sscl_10pct`` -> ``sscl``, an SsCL ablation -> ``sscl``,
    ``moco_v2_finetune_1pct`` -> ``moco_v2_finetune``, ``moco_v2`` -> itself."""
    if row.startswith(tuple(ABLATIONS)):
        return "sscl"
    for name in (FINETUNE, *TRAINED):
        if row.startswith(name):
            return name
    return row


def recipe(row: str, a: argparse.Namespace, lr: float | None = None) -> dict:
    """The resolved recipe of ``row`` (``<method>_<fraction>``, an ablation, or ``moco_v2``) at
    the benchmark's schedule; its ``seed`` and ``out`` are the job's."""
    from vislearn.core.config import load_config

    # no online evaluation during training (check_val_every_n_epoch past the end): the job
    # scores the validation split and the test set itself
    overrides: dict = {
        "trainer": {"max_epochs": a.epochs, "limit_train_batches": a.batches,
                    "check_val_every_n_epoch": a.epochs + 1, "progress": False},
        "data": {"dataset": a.dataset},
    }  # fmt: skip
    if row == "moco_v2":  # pretraining on the unlabelled share of a semi-supervised batch
        overrides["data"]["batch_size"] = UNLABELLED
        cfg = load_config(ROOT / "configs" / "fmnist_ssl" / "moco_v2.yaml", **overrides)
    else:
        name = row
        for ablation, model in ABLATIONS.items():
            if row.startswith(ablation):
                name = row.replace(ablation, "sscl")
                overrides["model"] = dict(model)
        if lr is not None:
            overrides.setdefault("model", {})["lr"] = lr
        cfg = load_config(ROOT / "configs" / "fmnist_semi" / f"{name}.yaml", **overrides)
        assert cfg["data"]["labelled_batch_size"] == LABELLED, row
    cfg.pop("seed")
    cfg.pop("out")
    return cfg


def val_spec(a: argparse.Namespace) -> dict:
    return {"per_class": a.val_per_class, "seed": VAL["seed"], "label_seed": LABEL_SEED,
            "outside_fraction": max(FRACTIONS.values())}  # fmt: skip


def fewshot_spec(a: argparse.Namespace) -> dict:
    return {**FEWSHOT, "shots": list(FEWSHOT["shots"]), "episodes": a.episodes}


def validation_indices(labels: np.ndarray, per_class: int, seed: int, label_seed: int,
                       outside_fraction: float) -> np.ndarray:  # fmt: skip
    """The validation split: ``per_class`` images of every class (seeded) among the training
    images outside the ``outside_fraction`` labelled subset of ``label_seed``, hence outside
    every smaller (nested) labelled subset too. Sorted indices into the training split."""
    from vislearn.data.subsets import balanced_subset, split_labelled_unlabelled

    labels = np.asarray(labels)
    _, rest = split_labelled_unlabelled(labels, fraction=outside_fraction, seed=label_seed)
    return np.sort(rest[balanced_subset(labels[rest], per_class=per_class, seed=seed)])


def train_job(row: str, seed: int, lr: float, a: argparse.Namespace) -> Job:
    config = {"kind": "train", "row": row, "lr": lr, "recipe": recipe(row, a, lr),
              "val": val_spec(a), "fewshot": fewshot_spec(a)}  # fmt: skip
    return Job(row, seed, config, "fmnist_semi:run_semi_job")


def pretrain_job(seed: int, a: argparse.Namespace) -> Job:
    config = {"kind": "pretrain", "row": "moco_v2", "recipe": recipe("moco_v2", a),
              "val": val_spec(a), "fewshot": fewshot_spec(a)}  # fmt: skip
    return Job("moco_v2", seed, config, "fmnist_semi:run_semi_job")


def finetune_job(
    tag: str, seed: int, lr: float, pre: Job, a: argparse.Namespace, cache: Path
) -> Job:
    """Fine-tune seed ``seed``'s MoCo v2 backbone (the ``pre`` job's) on the labelled subset
    for the supervised row's steps and batches."""
    config = {"kind": "finetune", "row": f"{FINETUNE}_{tag}", "lr": lr, "init_key": pre.key,
              "fraction": FRACTIONS[tag], "label_seed": LABEL_SEED, "steps": a.epochs * a.batches,
              "batch_size": LABELLED, "weight_decay": WEIGHT_DECAY, "augment": "supervised",
              "dataset": a.dataset, "val": val_spec(a)}  # fmt: skip
    backbone = pre.run_dir(cache) / "backbone.safetensors"
    return Job(config["row"], seed, config, "fmnist_semi:run_semi_job",
               resources={"backbone": str(backbone)})  # fmt: skip


def run_semi_job(config: dict, seed: int, ctx: dict) -> dict:
    """Train one row's recipe (or the MoCo v2 pretraining, or one fine-tune) and score it on
    the validation split and the test set; runs in a worker process."""
    import lightning as L
    import torch
    from torch.utils.data import Subset

    from vislearn.data.datasets import get_dataset
    from vislearn.ops.features import extract_features
    from vislearn.tasks.ssl.run import save_backbone

    t0 = time.perf_counter()
    L.seed_everything(seed, verbose=False)
    dataset = (
        config["dataset"] if config["kind"] == "finetune" else config["recipe"]["data"]["dataset"]
    )
    train, test = get_dataset(dataset, "train"), get_dataset(dataset, "test")
    val_idx = validation_indices(train.labels, **config["val"])
    val = Subset(train, val_idx.tolist())
    if config["kind"] == "finetune":
        return {
            **_finetune(config, seed, ctx, train, val, test),
            "wall_seconds": time.perf_counter() - t0,
        }

    cfg = {**config["recipe"], "seed": seed}
    model, dm, trainer, out = fit_without(cfg, val_idx, ctx["run_dir"])

    if config["kind"] == "pretrain":
        m = cfg["model"]
        spec = {"backbone": m["backbone"], "backbone_kwargs": m["backbone_kwargs"],
                "in_chans": dm.channels, "method": cfg["method"]}  # fmt: skip
        save_backbone(model.backbone, Path(ctx["run_dir"]) / "backbone.safetensors", spec)
    else:
        head = torch.nn.Sequential(model.backbone, model.classifier)
        out["val_top1"] = top1(head, val)
        out["top1"] = top1(head, test)
        if hasattr(model, "momentum_classifier"):  # the EMA teacher, for reference
            out["ema_top1"] = top1(
                torch.nn.Sequential(model.momentum_backbone, model.momentum_classifier), test
            )
        mask = trainer.callback_metrics.get("train/mask_rate")
        if mask is not None:
            out["last_mask_rate"] = float(mask)
    feats, labels = extract_features(model.backbone, test)
    out.update(_fewshot(feats, labels, config["fewshot"], seed))
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def fit_without(cfg: dict, val_idx: np.ndarray, run_dir) -> tuple:
    """Train recipe ``cfg`` in ``run_dir`` on its training split minus the validation images
    ``val_idx``; returns ``(model, datamodule, trainer, stats)`` (throughput, steps, size of
    the held-out split)."""
    from vislearn.engine.trainer import Throughput, build_trainer
    from vislearn.tasks.ssl.run import build_datamodule, build_from_config

    dm = build_datamodule(cfg, exclude=val_idx)
    model = build_from_config(cfg, dm)
    tp = Throughput()
    trainer = build_trainer(run_dir, callbacks=[tp], **cfg["trainer"])
    trainer.fit(model, datamodule=dm)
    stats = {"images_per_s": tp.images_per_s, "train_seconds": tp.seconds,
             "steps": int(trainer.global_step), "num_val": len(val_idx)}  # fmt: skip
    return model, dm, trainer, stats


def top1(net, dataset) -> float:
    """Top-1 (%) of a classifier network on a labelled data set."""
    from vislearn.ops.features import extract_features

    logits, labels = extract_features(net, dataset)
    return 100 * (logits.argmax(1) == labels).float().mean().item()


def _fewshot(feats, labels, spec: dict, seed: int) -> dict:
    from vislearn.eval.fewshot import few_shot_eval

    return {
        f"fewshot_{spec['ways']}w{k}s": few_shot_eval(
            feats, labels, spec["ways"], k, spec["queries"], spec["episodes"], seed=seed
        )
        for k in spec["shots"]
    }


def _finetune(config: dict, seed: int, ctx: dict, train, val, test) -> dict:
    """The whole MoCo v2 backbone + a linear head, trained on the labelled subset for exactly
    ``steps`` batches of ``batch_size`` (a stream of seeded permutations of the subset, like
    the supervised row's sampler), SGD momentum 0.9, cosine, no warm-up."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler
    from torch.utils.data import Subset as TorchSubset

    from vislearn.data.augment import MultiViewAugment
    from vislearn.data.subsets import balanced_subset
    from vislearn.eval.finetune import finetune, linear_head_model
    from vislearn.models.io import load_backbone

    backbone = load_backbone(ctx["resources"]["backbone"])
    labelled = balanced_subset(train.labels, fraction=config["fraction"], seed=config["label_seed"])
    g = torch.Generator().manual_seed(seed)
    net = linear_head_model(backbone, int(train.num_classes), g)
    subset = TorchSubset(train, labelled.tolist())
    n = config["steps"] * config["batch_size"]
    sampler = RandomSampler(subset, replacement=False, num_samples=n, generator=g)
    loader = DataLoader(subset, batch_size=config["batch_size"], sampler=sampler, drop_last=True)
    first = train[0][0]
    view = MultiViewAugment(config["augment"], int(first.shape[-1]), int(first.shape[0]), seed)
    t0 = time.perf_counter()
    steps = finetune(net, loader, view, 1, config["lr"], config["weight_decay"])
    train_seconds = time.perf_counter() - t0
    net.eval()
    return {"val_top1": top1(net, val), "top1": top1(net, test), "steps": steps,
            "num_labelled": len(labelled), "train_seconds": train_seconds,
            "images_per_s": steps * config["batch_size"] / max(train_seconds, 1e-9)}  # fmt: skip


def select(records: list[dict], seed: int, grid_points: int = 0) -> dict[str, float]:
    """The picked learning rate per row: the best validation top-1 of seed ``seed``'s grid
    (the smaller rate on a tie); only rows whose whole grid (its first ``grid_points``, 0: all)
    has finished, so a report from a partial cache picks nothing early."""
    best: dict[str, tuple[float, float]] = {}
    done: dict[str, set] = {}
    for r in records:
        if r["seed"] != seed or "val_top1" not in r["metrics"]:
            continue
        row, lr, v = r["config"]["row"], r["config"]["lr"], r["metrics"]["val_top1"]
        done.setdefault(row, set()).add(lr)
        if row not in best or v > best[row][0] or (v == best[row][0] and lr < best[row][1]):
            best[row] = (v, lr)
    out = {}
    for row, (_, lr) in best.items():
        grid = LR_GRID.get(base_of(row), ())
        if set(grid[: grid_points or None]) <= done[row]:
            out[row] = lr
    return out


def make_jobs(a: argparse.Namespace, cache: Path) -> dict[str, list[Job]]:
    """The job table before any result: phase 1 (seed 0's learning-rate grids of the trained
    rows, the MoCo v2 pretrainings) -- what the later phases need is picked from it."""
    s0 = a.seeds[0]
    grid = [train_job(f"{m}_{tag}", s0, lr, a) for m in TRAINED for tag in a.fractions
            for lr in lr_grid(m, a)]  # fmt: skip
    pre = [pretrain_job(s, a) for s in a.seeds]
    return {"phase1": sorted(grid + pre, key=lambda j: -COST[base_of(j.name)])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="epochs of --batches steps, every row")
    p.add_argument("--batches", type=int, default=200, help="steps per epoch, every row")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ablation-seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--fractions", nargs="+", default=list(FRACTIONS), choices=list(FRACTIONS))
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--val-per-class", type=int, default=VAL["per_class"])
    p.add_argument("--episodes", type=int, default=FEWSHOT["episodes"], help="few-shot episodes")
    p.add_argument("--grid-points", type=int, default=0, help="first N of each grid (0: all)")
    p.add_argument(
        "--jobs", type=int, default=2, help="concurrent runs (threads each = 1); 0: in-process"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--smoke", action="store_true", help="tiny data, 2 steps per run (< 1 min)")
    p.add_argument("--cache", default=str(BENCH / ".cache" / "fmnist_semi"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_semi.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    a = p.parse_args()
    if a.smoke:
        for k, v in SMOKE.items():
            setattr(a, k, v)
    cache = Path(a.cache)
    t0 = time.perf_counter()
    run = {"n_jobs": a.jobs, "threads_per_job": a.threads, "report_only": a.report_only,
           "import_paths": [BENCH],
           "show": ("val_top1", "top1", "images_per_s")}  # fmt: skip
    s0 = a.seeds[0]

    # phase 1: seed 0's grids of the trained rows, the MoCo v2 pretrainings
    phase1 = make_jobs(a, cache)["phase1"]
    rec1 = run_jobs(phase1, cache, **run)
    chosen = select(rec1, s0, a.grid_points)
    pre = {j.seed: j for j in phase1 if j.name == "moco_v2"}
    pre_done = {r["key"] for r in rec1 if r["name"] == "moco_v2"}

    # phase 2: the other seeds at the picked rates, the ablations, seed 0's fine-tuning grid
    phase2 = [train_job(row, s, chosen[row], a) for row in chosen for s in a.seeds[1:]]
    if "1pct" in a.fractions and "sscl_1pct" in chosen:
        phase2 += [train_job(f"{n}_1pct", s, chosen["sscl_1pct"], a)
                   for n in ABLATIONS for s in a.ablation_seeds]  # fmt: skip
    ft_grid = [finetune_job(tag, s0, lr, pre[s0], a, cache) for tag in a.fractions
               for lr in lr_grid(FINETUNE, a) if pre[s0].key in pre_done]  # fmt: skip
    phase2 = sorted(phase2, key=lambda j: -COST[base_of(j.name)]) + ft_grid
    rec2 = run_jobs(phase2, cache, **run)
    ft_recs = [r for r in rec2 if r["config"]["kind"] == "finetune"]
    chosen.update(select(ft_recs, s0, a.grid_points))

    # phase 3: the other seeds' fine-tunes at the picked rates
    phase3 = [finetune_job(tag, s, chosen[f"{FINETUNE}_{tag}"], pre[s], a, cache)
              for tag in a.fractions for s in a.seeds[1:]
              if f"{FINETUNE}_{tag}" in chosen and pre[s].key in pre_done]  # fmt: skip
    rec3 = run_jobs(phase3, cache, **run)
    write_results(rec1 + rec2 + rec3, chosen, a, time.perf_counter() - t0)


def results_of(
    runs: list[dict], chosen: dict[str, float], s0: int
) -> tuple[list[dict], list[dict]]:
    """``(records, grid)``: one pseudo-record per (result row, seed) -- seed ``s0``'s grid
    runs only at the picked rate --, and seed ``s0``'s grid (row, lr, validation and test
    top-1)."""
    records, grid = [], []
    for run in runs:
        c, m = run["config"], run["metrics"]
        row = c["row"]
        if c["kind"] != "pretrain" and not row.startswith(tuple(ABLATIONS)):
            if run["seed"] == s0:
                grid.append(
                    {"row": row, "lr": c["lr"], "val_top1": m["val_top1"], "top1": m["top1"]}
                )
            if chosen.get(row) != c["lr"]:
                continue  # another point of the grid, or the grid is not finished yet
        name = row
        for key, value in m.items():
            if key.startswith("fewshot_"):
                fs = {"name": f"fewshot/{name}/{key.removeprefix('fewshot_')}", "seed": run["seed"]}
                records.append({**fs, "metrics": dict(value)})
        if c["kind"] == "pretrain":
            continue
        metrics = {k: m[k] for k in (*METRICS, "steps") if k in m}
        records.append({"name": name, "seed": run["seed"], "metrics": {**metrics, "lr": c["lr"]}})
    return records, grid


def write_results(runs: list[dict], chosen: dict[str, float], a: argparse.Namespace,
                  wall: float) -> None:  # fmt: skip
    import torch

    records, grid = results_of(runs, chosen, a.seeds[0])
    metrics = list(METRICS)
    rows = []
    for tag in FRACTIONS:  # each fraction's rows paired against its supervised row
        main = [r for r in records if r["name"] in {f"{b}_{tag}" for b in ROW_ORDER}]
        rows += aggregate(main, metrics, baseline=f"supervised_{tag}")
        sscl = next((r for r in rows if r["name"] == f"sscl_{tag}"), None)
        if sscl is not None:  # SsCL against every other row of its fraction, paired by seed
            by = {}
            for r in main:
                by.setdefault(r["name"], {})[r["seed"]] = r["metrics"]["top1"]
            sscl["top1_vs"] = {}
            for other in (f"{b}_{tag}" for b in ROW_ORDER if b != "sscl"):
                if other in by and set(by[other]) & set(by[f"sscl_{tag}"]):
                    sscl["top1_vs"][other] = rounded_paired_diff(by[f"sscl_{tag}"], by[other])
    ablation = [
        r for r in records if r["name"].startswith(tuple(ABLATIONS)) or r["name"] == "sscl_1pct"
    ]
    rows += [
        r for r in aggregate(ablation, metrics, baseline="sscl_1pct") if r["name"] != "sscl_1pct"
    ]
    few = [r for r in records if r["name"].startswith("fewshot/")]
    few_metrics = list(dict.fromkeys(k for r in few for k in r["metrics"]))
    rows += sorted(aggregate(few, few_metrics), key=lambda r: r["name"])

    def order(r: dict) -> tuple:
        for i, base in enumerate(ROW_ORDER):
            for j, tag in enumerate(FRACTIONS):
                if r["name"] == f"{base}_{tag}":
                    return (0, j, i)
        return (1 if not r["name"].startswith("fewshot/") else 2, r["name"])

    rows.sort(key=order)
    for row in rows:  # the picked rate and the step count: one value per row, not averaged
        recs = [r["metrics"] for r in records if r["name"] == row["name"]]
        for key in ("lr", "steps"):
            if recs and key in recs[0]:
                row[key] = recs[0][key]
    selection = {}
    for row, lr in sorted(chosen.items()):
        g = LR_GRID[base_of(row)][: a.grid_points or None]
        selection[row] = {
            "grid": list(g), "picked": lr, "at_grid_edge": lr in (g[0], g[-1]),
            "seed0": {f"{x['lr']:g}": {"val_top1": round(x["val_top1"], 2),
                                        "top1": round(x["top1"], 2)}
                      for x in sorted(grid, key=lambda x: x["lr"]) if x["row"] == row},
        }  # fmt: skip
    steps = a.epochs * a.batches
    settings = {
        "protocol": "equal labelled exposure, equal steps, learning rates picked on a held-out "
        "validation split (seed 0, reused), seeds with 95 % intervals and paired differences "
        "(issue 22)",
        "data": f"{a.dataset}; labelled subset: seeded class-balanced (data.label_fraction, "
        f"label_seed {LABEL_SEED}): 600 images at 1 %, 6,000 at 10 % (Fashion-MNIST); "
        f"validation: {a.val_per_class} images per class held out of every row's training, "
        "drawn outside the 10 % labelled subset",
        "steps": f"{steps} per row ({a.epochs} epochs x {a.batches} batches)",
        "batch": f"{LABELLED} labelled per step for every row; pseudolabel/sscl + {UNLABELLED} "
        f"unlabelled (mu = 3); moco_v2_finetune: {steps} MoCo v2 steps of {UNLABELLED} "
        f"unlabelled images, then {steps} fine-tuning steps of {LABELLED} labelled images",
        "seeds": a.seeds,
        "ablation_seeds": a.ablation_seeds,
        "backbone": "resnet_tiny (stem small_ds, width 16; 77k params, 64-d features)",
        "optimizer": f"SGD momentum 0.9, wd {WEIGHT_DECAY:g} (none on norms/biases), cosine, "
        "no warm-up; lr picked per row from its grid (lr_selection)",
        "lr_selection": selection,
        "top1": "test top-1 (%) of the row's classifier head (the online network; ema_top1: "
        "the EMA teacher); val_top1: the same on the validation split (selection only)",
        "moco_v2_finetune": "configs/fmnist_ssl/moco_v2.yaml at batch 192, lr 0.06 (not "
        "tuned), then whole-network fine-tuning with a linear head: SGD, crop 0.5-1 + flip, "
        "cosine",
        "fewshot": f"{FEWSHOT['ways']}-way {list(FEWSHOT['shots'])}-shot, "
        f"{FEWSHOT['queries']} queries/class, {a.episodes} episodes from the test "
        "split, frozen pooled features; prototype (cosine to class means) and logistic "
        "regression; mean and 95 % interval. Classes are not novel (see docs/RESULTS.md)",
        "ablations": {f"{k}_1pct": v for k, v in ABLATIONS.items()},
        "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{a.jobs} runs at a time, one thread each",
        "intervals": "mean over seeds; *_ci95: Student-t 95 % interval over seeds; *_diff: "
        "paired (same seed) difference against supervised_<fraction> (ablations: sscl_1pct); "
        "sscl rows' top1_vs: SsCL minus every other row of the fraction, paired; the few-shot "
        "rows' prototype_ci95/logistic_ci95 are their episodes' intervals, averaged over seeds",
        "run_seconds": run_seconds(runs),  # every run's own wall clock, cached or not
        "wall_seconds_this_invocation": round(wall, 1),
    }
    write_json_results(a.out, "fmnist_semi", settings, rows)
    print(f"wrote {a.out}")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
