"""Fashion-MNIST SSL benchmark: vislearn vs lightly for MoCo v2, SimCLR and BYOL, plus
random-init and supervised reference rows -> docs/results/fmnist_ssl.json.

Both implementations of a method get the same recipe (configs/fmnist_ssl/<method>.yaml):
backbone, device-side augmentation, batch, optimiser, schedule, epochs and seed. The two
runs of a (method, seed) pair execute concurrently, one thread each, so they share the
machine's load equally and their images/s are directly comparable.

    python benchmarks/fmnist_ssl.py --epochs 4 --seeds 0 1 --jobs 2

Finished runs are cached under --cache, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("moco_v2", "simclr", "byol")


def run_job(job: dict) -> dict:
    """Train one (impl, method, seed) and evaluate it offline; runs in a worker process."""
    import lightning as L
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vislearn.core.config import load_config
    from vislearn.engine.trainer import Throughput, build_trainer
    from vislearn.models import create_backbone
    from vislearn.tasks.ssl.run import build_datamodule, build_from_config, evaluate

    torch.set_num_threads(job["threads"])
    cfg = load_config(
        ROOT / "configs" / "fmnist_ssl" / f"{job['method']}.yaml",
        seed=job["seed"],
        trainer={
            "max_epochs": job["epochs"],
            "check_val_every_n_epoch": job["epochs"],
            "progress": False,
        },
        data={"dataset": job["dataset"]},
    )
    L.seed_everything(job["seed"], verbose=False)
    dm = build_datamodule(cfg)
    t0 = time.perf_counter()
    if job["impl"] == "random_init":
        m = cfg["model"]
        backbone = create_backbone(m["backbone"], in_chans=dm.channels, **m["backbone_kwargs"])
        stats = {}
    else:
        if job["impl"] == "lightly":
            from lightly_methods import LIGHTLY_METHODS

            kwargs = {
                "in_chans": dm.channels,
                "image_size": dm.image_size,
                "num_classes": dm.num_classes,
                "seed": job["seed"],
                **cfg["model"],
            }
            model = LIGHTLY_METHODS[job["method"]](**kwargs)
        else:
            model = build_from_config(cfg, dm)
        tp = Throughput()
        out = Path(job["cache"]) / "runs" / job["key"]
        trainer = build_trainer(out, callbacks=[tp], **cfg["trainer"])
        trainer.fit(model, datamodule=dm)
        backbone = model.backbone
        stats = {
            "images_per_s": tp.images_per_s,
            "train_seconds": tp.seconds,
            "online_knn_top1": 100 * float(trainer.callback_metrics["val/knn_top1"]),
        }
    e = cfg["eval"]
    res = evaluate(
        backbone,
        job["dataset"],
        knn_k=e["knn_k"],
        knn_t=e["knn_t"],
        linear_epochs=e["linear_epochs"],
        linear_lr=e["linear_lr"],
        device="cpu",
    )
    return {**job, **res, **stats, "wall_seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--jobs", type=int, default=2, help="concurrent runs (threads each = 1)")
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache" / "fmnist_ssl"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_ssl.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    p.add_argument("--note", default="", help="free-text note stored in settings.notes")
    a = p.parse_args()

    jobs = []
    for seed in a.seeds:
        for method in a.methods:
            for impl in ("vislearn", "lightly"):  # adjacent -> run concurrently as a pair
                jobs.append({"impl": impl, "method": method, "seed": seed})
    for seed in a.seeds:  # the reference rows last, so they never break up a pair
        jobs.append({"impl": "supervised", "method": "supervised", "seed": seed})
        jobs.append({"impl": "random_init", "method": "supervised", "seed": seed})
    done = run_pending(jobs, a.epochs, a.dataset, a.seeds, Path(a.cache), a.jobs, a.report_only)
    write_results(done, a)


def run_pending(
    jobs: list[dict],
    epochs: int,
    dataset: str,
    seeds: list[int],
    cache: Path,
    n_jobs: int,
    report_only: bool = False,
    worker=None,
) -> list[dict]:
    """Run the ``jobs`` not in ``cache`` yet (``n_jobs`` at a time, one thread each when
    several, each by ``worker``: default :func:`run_job`) and return every finished run:
    these, plus cached runs of the same epochs and seeds (e.g. variants run earlier)."""
    cache.mkdir(parents=True, exist_ok=True)
    todo, done = [], []
    for j in jobs:
        j.update(
            epochs=epochs,
            dataset=dataset,
            threads=1 if n_jobs > 1 else 2,
            cache=str(cache),
            key=f"{j['impl']}_{j['method']}_s{j['seed']}_e{epochs}",
        )
        f = cache / f"{j['key']}.json"
        (done.append(json.loads(f.read_text())) if f.exists() else todo.append(j))
    keys = {j["key"] for j in jobs}  # also report extra cached variants (e.g. joint views)
    for f in sorted(cache.glob(f"*_e{epochs}.json")):
        if f.stem not in keys and json.loads(f.read_text())["seed"] in seeds:
            done.append(json.loads(f.read_text()))
    print(f"{len(done)} cached, {len(todo)} to run", flush=True)
    if report_only:
        todo = []
    from vislearn.core.utils import write_json

    with ProcessPoolExecutor(
        n_jobs, mp_context=get_context("spawn"), max_tasks_per_child=1
    ) as pool:
        # cache each run as soon as it finishes (not in submission order): a killed
        # benchmark loses at most the runs in flight
        futures = [pool.submit(worker or run_job, j) for j in todo]
        for fut in as_completed(futures):
            row = fut.result()
            write_json(cache / f"{row['key']}.json", row)
            shown = ("key", "knn_top1", "linear_top1", "miou", "images_per_s", "seconds_per_step")
            print(json.dumps({k: row[k] for k in shown if k in row}), flush=True)
            done.append(row)
    return done


def aggregate(groups: dict[str, list[dict]]) -> list[dict]:
    """One row per named group of runs: mean, per-seed values and spread of each metric."""
    rows = []
    for name, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        row: dict = {"name": name, "seeds": [r["seed"] for r in rs]}
        for metric in ("knn_top1", "linear_top1", "images_per_s"):
            vals = [r[metric] for r in rs if metric in r]
            if vals:
                row[metric] = round(statistics.mean(vals), 2)
                row[f"{metric}_per_seed"] = [round(v, 2) for v in vals]
                row[f"{metric}_spread"] = round(max(vals) - min(vals), 2)
        rows.append(row)
    return rows


def row_name(r: dict) -> str:
    if r["impl"] in ("supervised", "random_init"):
        return r["impl"]
    if r["impl"] == "vislearn_joint":  # the same method with model.joint_views=true
        return f"vislearn/{r['method']}_joint_views"
    return f"{r['impl']}/{r['method']}"


def write_results(runs: list[dict], a: argparse.Namespace) -> None:
    import torch

    from vislearn.core.config import load_config
    from vislearn.core.utils import write_json

    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(row_name(r), []).append(r)
    rows = aggregate(groups)
    by_name = {r["name"]: r for r in rows}
    speed_file = Path(a.out).with_name("fmnist_ssl_speed.json")
    if speed_file.exists():  # interleaved same-process timing (fmnist_ssl_speed.py) wins
        for s in json.loads(speed_file.read_text())["rows"]:
            if s["name"] in by_name:
                r = by_name[s["name"]]
                r["images_per_s_concurrent_runs"] = r.pop("images_per_s", None)
                r["images_per_s"] = s["images_per_s"]
                if "speed_ratio_vs_lightly" in s:
                    r["speed_ratio_vs_lightly"] = s["speed_ratio_vs_lightly"]
    for m in METHODS:  # speed as a ratio against the peer, per seed (same-seed runs are paired)
        ours, peer = groups.get(f"vislearn/{m}", []), groups.get(f"lightly/{m}", [])
        peer_by_seed = {r["seed"]: r["images_per_s"] for r in peer}
        ratios = [
            r["images_per_s"] / peer_by_seed[r["seed"]] for r in ours if r["seed"] in peer_by_seed
        ]
        if ratios:
            by_name[f"vislearn/{m}"]["speed_ratio_concurrent_runs_per_seed"] = [
                round(x, 3) for x in ratios
            ]
    order = [
        n for m in METHODS for n in (f"vislearn/{m}", f"lightly/{m}", f"vislearn/{m}_joint_views")
    ]
    rows.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    recipes = {
        m: load_config(ROOT / "configs" / "fmnist_ssl" / f"{m}.yaml")["model"]
        for m in (*METHODS, "supervised")
    }
    settings = {
        "data": f"Fashion-MNIST ({a.dataset}), train 60k / test 10k, 28x28 grayscale",
        "epochs": a.epochs,
        "batch_size": 256,
        "seeds": a.seeds,
        "backbone": "resnet_tiny (stem small_ds, width 16; 77k params, 64-d features)",
        "optimizer": "SGD momentum 0.9, lr 0.06, wd 5e-4 (none on norms/biases), cosine, "
        "no warm-up",
        "augmentation": "vislearn device-side presets (moco_v2 / simclr / byol / supervised), "
        "identical for both implementations",
        "knn": "k=200, T=0.07, cosine, bank = 60k train features, query = 10k test",
        "linear": "100 epochs SGD on frozen standardised features, lr 0.1 cosine",
        "images_per_s": "from fmnist_ssl_speed.json when present (one process, interleaved "
        "repeats, median); images_per_s_concurrent_runs = training-loop wall clock of the "
        "benchmark runs themselves (validation excluded), two runs sharing the 2 cores",
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, torch "
        f"{torch.__version__}, no GPU",
        "recipes": recipes,
        "notes": a.note,
    }
    write_json(a.out, {"benchmark": "fmnist_ssl", "settings": settings, "rows": rows})
    print(f"wrote {a.out}")
    for r in rows:
        print(
            f"| {r['name']} | {r.get('knn_top1', '')} ± {r.get('knn_top1_spread', '')} | "
            f"{r.get('linear_top1', '')} ± {r.get('linear_top1_spread', '')} | "
            f"{r.get('images_per_s', '')} |"
        )


if __name__ == "__main__":
    main()
