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

    python benchmarks/fmnist_mra.py --seeds 0 --jobs 2
    python benchmarks/fmnist_mra.py --report-only
    # smoke test (embedded 5k subset, 2 steps per run, two rows, results outside docs/):
    python benchmarks/fmnist_mra.py --dataset fmnist-mini --epochs 1 --mae-epochs 1 \\
        --limit-batches 2 --augments baseline mra --fractions 10pct \\
        --cache /tmp/mra_smoke --out /tmp/mra_smoke/fmnist_mra.json

Finished runs are cached under --cache (one JSON per run, and the run directories with their
``last.ckpt``), so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fmnist_ssl import run_pending  # noqa: E402

AUGMENTS = ("baseline", "mra", "cutmix", "mixup", "randaugment")
FRACTIONS = ("100pct", "10pct", "1pct")
OCCLUSION = {"size": 14, "seed": 0, "fill": 0, "count": 1}
METRICS = ("top1", "occluded_top1", "images_per_s", "train_seconds")


def _trainer(job: dict, epochs: int) -> dict:
    t = {"max_epochs": epochs, "check_val_every_n_epoch": epochs, "progress": False}
    if job.get("limit_batches"):
        t["limit_train_batches"] = job["limit_batches"]
    return t


def mae_dir(cache: str | Path, mae_epochs: int, dataset: str) -> Path:
    """Run directory of the (one) MAE all MRA rows use."""
    return Path(cache) / "runs" / f"mae_{dataset}_e{mae_epochs}"


def run_mra_job(job: dict) -> dict:
    """Pretrain the MAE, or train one classifier row and score it; runs in a worker process."""
    import warnings

    import torch

    from vislearn.core.config import load_config
    from vislearn.tasks.ssl.run import pretrain, train_classifier

    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # the frozen MAE
    torch.set_num_threads(job["threads"])
    t0 = time.perf_counter()
    data = {"dataset": job["dataset"]}
    if job.get("limit_batches"):
        data["knn_bank_size"] = 500
    if job["method"].startswith("mae"):
        out = mae_dir(job["cache"], job["mae_epochs"], job["dataset"])
        cfg = load_config(
            ROOT / "configs" / "fmnist_mae" / "mae.yaml",
            seed=0,
            out=str(out),
            data=data,
            trainer=_trainer(job, job["mae_epochs"]),
        )
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
        model_cfg = {}
        if job["method"].startswith("mra_"):
            model_cfg["mae"] = job["mae"]
        cfg = load_config(
            ROOT / "configs" / "fmnist_mra" / f"{job['method']}.yaml",
            seed=job["seed"],
            out=str(Path(job["cache"]) / "runs" / job["key"]),
            model=model_cfg,
            data=data,
            trainer=_trainer(job, job["epochs"]),
        )
        _, _, res = train_classifier(cfg, OCCLUSION)
    return {**job, **res, "wall_seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3, help="classifier epochs, every row (3)")
    p.add_argument("--mae-epochs", type=int, default=5, help="MAE pretraining epochs (5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--jobs", type=int, default=2, help="concurrent runs (threads each = 1)")
    p.add_argument("--dataset", default="fmnist", help="fmnist (default) or fmnist-mini (smoke)")
    p.add_argument("--augments", nargs="+", default=list(AUGMENTS), choices=AUGMENTS)
    p.add_argument("--fractions", nargs="+", default=list(FRACTIONS), choices=FRACTIONS)
    p.add_argument(
        "--limit-batches", type=int, help="smoke tests: steps per epoch (and a 500-image kNN bank)"
    )
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache" / "fmnist_mra"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_mra.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    a = p.parse_args()

    cache = Path(a.cache)
    extra = {"mae_epochs": a.mae_epochs, "limit_batches": a.limit_batches}
    mae_path = str(mae_dir(cache, a.mae_epochs, a.dataset) / "mae.safetensors")
    # phase 1: the MAE (longest, first) next to every row that does not need it
    first = []
    if "mra" in a.augments:
        first.append({"impl": "mae", "method": f"mae_e{a.mae_epochs}", "seed": 0, **extra})
    second = []
    for seed in a.seeds:
        for aug in a.augments:
            for frac in a.fractions:
                job = {"impl": "cls", "method": f"{aug}_{frac}", "seed": seed, **extra}
                (second if aug == "mra" else first).append(job | {"mae": mae_path})
    run = {"epochs": a.epochs, "dataset": a.dataset, "seeds": [0, *a.seeds], "cache": cache}
    done = run_pending(first, n_jobs=a.jobs, report_only=a.report_only, worker=run_mra_job, **run)
    if second and not a.report_only and not Path(mae_path).is_file():
        raise SystemExit(f"the MAE did not finish ({mae_path} missing); rerun to resume")
    done += run_pending(second, n_jobs=a.jobs, report_only=a.report_only, worker=run_mra_job, **run)
    write_results({r["key"]: r for r in done}, a)


def write_results(runs: dict[str, dict], a: argparse.Namespace) -> None:
    import torch

    from vislearn.core.utils import write_json

    by_name: dict[str, list[dict]] = {}
    for r in runs.values():
        if r.get("limit_batches") != a.limit_batches or r["dataset"] != a.dataset:
            continue
        if r["impl"] == "mae" and r["mae_epochs"] == a.mae_epochs:
            by_name.setdefault("mae_pretraining", []).append(r)
        elif r["impl"] == "cls" and r["seed"] in a.seeds:
            by_name.setdefault(r["method"], []).append(r)
    rows = []
    order = [f"{aug}_{frac}" for frac in FRACTIONS for aug in AUGMENTS]
    for name in order:
        if name in by_name:
            rows.append(_aggregate(name, by_name[name], METRICS))
    for aug in AUGMENTS:
        if f"{aug}_100pct" in by_name:
            row = _aggregate(f"occluded/{aug}", by_name[f"{aug}_100pct"], ("occluded_top1",))
            row["clean_top1"] = next(r["top1"] for r in rows if r["name"] == f"{aug}_100pct")
            rows.append(row)
    if "mae_pretraining" in by_name:
        mae = by_name["mae_pretraining"][0]
        keys = ("final_loss", "knn_top1", "images_per_s", "train_seconds")
        rows.append(
            {"name": "mae_pretraining", **{k: round(mae[k], 4) for k in keys if mae.get(k)}}
        )
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
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, torch "
        f"{torch.__version__}, no GPU; {a.jobs} runs at a time, "
        f"{1 if a.jobs > 1 else 2} thread(s) each",
    }
    write_json(a.out, {"benchmark": "fmnist_mra", "settings": settings, "rows": rows})
    print(f"wrote {a.out}")
    for r in rows:
        print(json.dumps(r))


def _aggregate(name: str, runs: list[dict], metrics: tuple[str, ...]) -> dict:
    runs = sorted(runs, key=lambda r: r["seed"])
    row: dict = {"name": name, "seeds": [r["seed"] for r in runs]}
    for m in metrics:
        vals = [r[m] for r in runs if isinstance(r.get(m), int | float)]
        if vals:
            row[m] = round(statistics.mean(vals), 2)
            if len(vals) > 1:
                row[f"{m}_per_seed"] = [round(v, 2) for v in vals]
                row[f"{m}_spread"] = round(max(vals) - min(vals), 2)
    return row


if __name__ == "__main__":
    main()
