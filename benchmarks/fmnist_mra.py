"""Fashion-MNIST MRA benchmark: a supervised classifier with standard augmentation, + MRA,
+ CutMix, + Mixup, + RandAugment, at 100 %, 10 % and 1 % of the labels, clean and occluded
test top-1 -> docs/results/fmnist_mra.json.

First the MAE behind MRA is pretrained without labels on the 60k training images
(``configs/fmnist_mae/mae.yaml``, ``--mae-epochs``), concurrently with the rows that do not need
it; then the MRA rows run. Every classifier row trains its ``configs/fmnist_mra/<aug>_<frac>.yaml``
recipe for the same ``--epochs`` (234 steps of 256 each, at every label fraction) and reports the
classifier head's test top-1 on the clean 10k test set (``top1``) and on the same images with one
seeded 14x14 black square occluder each (``occluded_top1``); ``occluded/<aug>`` rows repeat the
100 % rows' occluded accuracy next to their clean one.

    python benchmarks/fmnist_mra.py --seeds 0 1 2 --jobs 2
    python benchmarks/fmnist_mra.py --report-only
    # smoke test (embedded 5k subset, 2 steps per run, two rows, results outside docs/):
    python benchmarks/fmnist_mra.py --dataset fmnist-mini --epochs 1 --mae-epochs 1 \\
        --limit-batches 2 --augments baseline mra --fractions 10pct \\
        --cache /tmp/mra_smoke --out /tmp/mra_smoke/fmnist_mra.json

Jobs run on :func:`vislearn.bench.run_jobs`: finished runs are cached under --cache by the hash
of their resolved recipe and seed (one JSON per run, next to its run directory with its
``last.ckpt``), so an interrupted benchmark resumes; the MRA rows' config holds the MAE job's
key, so a changed MAE recipe reruns them too. Rows: mean, per-seed values, 95 % t interval,
and the paired (same seed) difference against ``baseline_<fraction>``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from vislearn.bench import Job, aggregate, run_jobs, run_seconds
from vislearn.bench import write_results as write_json_results

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
FN = "fmnist_mra:run_mra_job"

AUGMENTS = ("baseline", "mra", "cutmix", "mixup", "randaugment")
FRACTIONS = ("100pct", "10pct", "1pct")
OCCLUSION = {"size": 14, "seed": 0, "fill": 0, "count": 1}
METRICS = ("top1", "occluded_top1", "images_per_s", "train_seconds")


def _trainer(epochs: int, limit_batches: int | None) -> dict:
    t = {"max_epochs": epochs, "check_val_every_n_epoch": epochs, "progress": False}
    if limit_batches:
        t["limit_train_batches"] = limit_batches
    return t


def _recipe(path: Path, epochs: int, a: argparse.Namespace, **updates) -> dict:
    from vislearn.core.config import load_config

    data = {"dataset": a.dataset}
    if a.limit_batches:
        data["knn_bank_size"] = 500
    cfg = load_config(path, data=data, trainer=_trainer(epochs, a.limit_batches), **updates)
    cfg.pop("seed")  # the job's
    cfg.pop("out")  # the job's run directory
    return cfg


def mae_job(a: argparse.Namespace) -> Job:
    """The (one) MAE all MRA rows use (seed 0)."""
    cfg = _recipe(ROOT / "configs" / "fmnist_mae" / "mae.yaml", a.mae_epochs, a)
    return Job("mae_pretraining", 0, {"kind": "mae", "recipe": cfg}, FN)


def row_jobs(a: argparse.Namespace, mae: Job, cache: Path) -> tuple[list[Job], list[Job]]:
    """The classifier rows: (those without the MAE, the MRA rows that need it)."""
    first, second = [], []
    mae_path = str(mae.run_dir(cache) / "mae.safetensors")
    for seed in a.seeds:
        for aug in a.augments:
            for frac in a.fractions:
                name = f"{aug}_{frac}"
                path = ROOT / "configs" / "fmnist_mra" / f"{name}.yaml"
                if aug == "mra":  # the MAE's identity is hashed, its path is not
                    cfg = {"kind": "cls", "mae_key": mae.key, "recipe": _recipe(path, a.epochs, a)}
                    second.append(Job(name, seed, cfg, FN, resources={"mae": mae_path}))
                else:
                    cfg = {"kind": "cls", "recipe": _recipe(path, a.epochs, a)}
                    first.append(Job(name, seed, cfg, FN))
    return first, second


def run_mra_job(config: dict, seed: int, ctx: dict) -> dict:
    """Pretrain the MAE, or train one classifier row and score it; runs in a worker process."""
    import warnings

    from vislearn.tasks.ssl.run import pretrain, train_classifier

    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # the frozen MAE
    t0 = time.perf_counter()
    out = Path(ctx["run_dir"])
    cfg = {**config["recipe"], "seed": seed, "out": str(out)}
    if config["kind"] == "mae":
        model, _, stats = pretrain(cfg)
        metrics = model.trainer.callback_metrics
        loss, knn = metrics.get("train/loss"), metrics.get("val/knn_top1")
        res = {
            "mae": str(out / "mae.safetensors"),
            "final_loss": None if loss is None else float(loss),
            "knn_top1": None if knn is None else 100 * float(knn),
            **stats,
        }
    else:
        if "mae_key" in config:
            cfg["model"] = {**cfg["model"], "mae": ctx["resources"]["mae"]}
        _, _, res = train_classifier(cfg, OCCLUSION)
    return {**res, "wall_seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="classifier epochs, every row (3)")
    p.add_argument("--mae-epochs", type=int, default=5, help="MAE pretraining epochs (5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="concurrent runs (threads each = 1)")
    p.add_argument("--dataset", default="fmnist", help="fmnist (default) or fmnist-mini (smoke)")
    p.add_argument("--augments", nargs="+", default=list(AUGMENTS), choices=AUGMENTS)
    p.add_argument("--fractions", nargs="+", default=list(FRACTIONS), choices=FRACTIONS)
    p.add_argument(
        "--limit-batches", type=int, help="smoke tests: steps per epoch (and a 500-image kNN bank)"
    )
    p.add_argument("--cache", default=str(BENCH / ".cache" / "fmnist_mra"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_mra.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    a = p.parse_args()

    cache = Path(a.cache)
    mae = mae_job(a)
    first, second = row_jobs(a, mae, cache)
    run = {"n_jobs": a.jobs, "report_only": a.report_only, "import_paths": [BENCH],
           "show": ("top1", "occluded_top1", "final_loss")}  # fmt: skip
    # phase 1: the MAE (longest, first) next to every row that does not need it
    done = run_jobs(([mae] if second else []) + first, cache, **run)
    mae_path = mae.run_dir(cache) / "mae.safetensors"
    if second and not a.report_only and not mae_path.is_file():
        raise SystemExit(f"the MAE did not finish ({mae_path} missing); rerun to resume")
    done += run_jobs(second, cache, **run)
    write_results(done, a)


def write_results(runs: list[dict], a: argparse.Namespace) -> None:
    import torch

    rows = []
    cls = [r for r in runs if r["config"]["kind"] == "cls"]
    order = [f"{aug}_{frac}" for frac in FRACTIONS for aug in AUGMENTS]
    cls.sort(key=lambda r: order.index(r["name"]))
    for frac in FRACTIONS:  # each fraction's rows paired against its baseline row
        group = [r for r in cls if r["name"].endswith(f"_{frac}")]
        rows += aggregate(group, METRICS, baseline=f"baseline_{frac}")
    for aug in AUGMENTS:
        group = [{**r, "name": f"occluded/{aug}"} for r in cls if r["name"] == f"{aug}_100pct"]
        if group:
            row = aggregate(group, ("occluded_top1",))[0]
            row["clean_top1"] = next(r["top1"] for r in rows if r["name"] == f"{aug}_100pct")
            rows.append(row)
    mae = [r for r in runs if r["config"]["kind"] == "mae"]
    if mae:
        keys = ("final_loss", "knn_top1", "images_per_s", "train_seconds")
        m = mae[0]["metrics"]
        rows.append({"name": "mae_pretraining", **{k: round(m[k], 4) for k in keys if m.get(k)}})
    settings = {
        "data": f"{a.dataset}: Fashion-MNIST 28x28 grayscale, train 60k / test 10k; labelled "
        "subsets seeded and class-balanced (label_seed 0): 6,000 images at 10 %, 600 at 1 %",
        "epochs": a.epochs,
        "steps_per_epoch": "234 (len(train) // 256 at every label fraction)",
        "batch_size": 256,
        "seeds": a.seeds,
        "backbone": "resnet_tiny (stem small_ds, width 16; 77k params)",
        "optimizer": "SGD momentum 0.9, lr 0.06, wd 5e-4 (none on norms/biases), cosine",
        "augmentations": {
            "baseline": "random resized crop (scale 0.5-1) + horizontal flip",
            "mra": "baseline + MRA: mask ratio 0.5, prob 0.5, token_dot score, paste-back on",
            "cutmix": "baseline + CutMix, alpha 1, every batch, one box per batch",
            "mixup": "baseline + Mixup, alpha 1, every batch",
            "randaugment": "RandAugment per image (2 ops, magnitude 9/31) + baseline",
        },
        "mae": f"configs/fmnist_mae/mae.yaml, {a.mae_epochs} epochs: vit_mini (patch 4) encoder, "
        "64-wide 2-block decoder, mask ratio 0.75, raw-pixel target, AdamW lr 1e-3, batch 256, "
        "60k training images without labels",
        "occlusion": f"one {OCCLUSION['size']}x{OCCLUSION['size']} square of value "
        f"{OCCLUSION['fill']} per test image, position uniform among those that fit, seeded per "
        f"image (seed {OCCLUSION['seed']})",
        "top1": "test top-1 (%) of the classifier head",
        "limit_train_batches": a.limit_batches,
        "intervals": "mean over seeds; *_ci95: Student-t 95 % interval (n - 1 dof); *_diff: "
        "paired (same seed) difference against baseline_<fraction>, with its 95 % t interval",
        "run_seconds": run_seconds(runs),
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, torch "
        f"{torch.__version__}, no GPU; {a.jobs} runs at a time, "
        f"{1 if a.jobs > 1 else 2} thread(s) each",
    }
    write_json_results(a.out, "fmnist_mra", settings, rows)
    print(f"wrote {a.out}")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
