"""Fashion-MNIST benchmark of CsMl (with its ablations) and KSCL (K = 1, 2, 3, 4, and symmetric
K = 2) against MoCo v2 -> docs/results/fmnist_csml_kscl.json.

Same protocol as ``fmnist_ssl.py`` (whose job function ``fmnist_ssl:run_job`` and cache it
shares: the MoCo v2 jobs have the same resolved config, hence the same key, so its runs are
reused): full Fashion-MNIST, the recipes in ``configs/fmnist_ssl/``, 4 epochs, then the
offline kNN and linear evaluation. ``moco_v2_asym`` is the one-directional MoCo v2 that CsMl
(all switches off) reduces to exactly, i.e. its direct control; it is KSCL's closest control
only (KSCL at K = 1 scores |q·k|, not q·k: ``kscl_k1`` measures that difference).
``kscl_k2_sym`` is symmetric KSCL (both query directions, like MoCo v2): compare it with
``moco_v2`` as ``kscl_k2`` with ``moco_v2_asym``. ``--rows`` runs a subset (the report keeps
every cached row).

    python benchmarks/fmnist_csml_kscl.py --seeds 0 1 2 --ablation-seeds 0 1 2 --jobs 2
    python benchmarks/fmnist_csml_kscl.py --speed      # interleaved cost per step, then
    python benchmarks/fmnist_csml_kscl.py --report-only

``--speed`` times each recipe's training step in one process (interleaved repeats, median,
``fmnist_ssl_speed.time_fit``) and CsMl's kNN-bag refresh over the 60k training images,
and writes ``fmnist_csml_kscl_speed.json``, which the report merges. Rows: mean, per-seed
values, 95 % t interval and the paired (same seed) difference against ``vislearn/moco_v2``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from vislearn.bench import (
    Job,
    aggregate,
    render_table,
    run_jobs,
)
from vislearn.bench import (
    write_results as write_json_results,
)

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
METRICS = ("knn_top1", "linear_top1", "images_per_s")

MAIN = ("moco_v2", "csml")  # every --seeds
ORDER = (
    "moco_v2",
    "moco_v2_asym",
    "csml",
    "csml_no_multilevel",
    "csml_no_mix",
    "kscl_k1",
    "kscl_k2",
    "kscl_k2_sym",
    "kscl_k3",
    "kscl_k4",
)
ABLATIONS = tuple(n for n in ORDER if n not in MAIN)
#: rows with two query directions (matched control: moco_v2); all others have one (moco_v2_asym)
SYMMETRIC = ("moco_v2", "kscl_k2_sym")
# rough cost per run, to start the longest first (two workers finish together)
COST = {
    "csml": 3,
    "csml_no_mix": 2.5,
    "csml_no_multilevel": 2.5,
    "kscl_k4": 2,
    "kscl_k3": 1.7,
    "kscl_k2_sym": 1.5,
}
RESULTS = ROOT / "docs" / "results"


def recipe(name: str) -> dict:
    from vislearn.core.config import load_config

    return load_config(ROOT / "configs" / "fmnist_ssl" / f"{name}.yaml")


def job_config(method: str, epochs: int, dataset: str) -> dict:
    """The resolved config of one run, exactly as ``fmnist_ssl.job_config`` builds it (same
    config -> same key -> the runs of fmnist_ssl.py are reused from the shared cache)."""
    from vislearn.core.config import load_config

    cfg = load_config(
        ROOT / "configs" / "fmnist_ssl" / f"{method}.yaml",
        trainer={"max_epochs": epochs, "check_val_every_n_epoch": epochs, "progress": False},
        data={"dataset": dataset},
        model={},
    )
    cfg.pop("seed")
    cfg.pop("out")
    return {"impl": "vislearn", "method": method, "recipe": cfg}


def make_jobs(a: argparse.Namespace) -> list[Job]:
    """The job table: every recipe of ORDER, MAIN ones at --seeds, ablations at
    --ablation-seeds, longest first (two workers finish together)."""
    jobs = [
        Job(f"vislearn/{m}", s, job_config(m, a.epochs, a.dataset), "fmnist_ssl:run_job")
        for m in ORDER
        for s in (a.seeds if m in MAIN else a.ablation_seeds)
        if m in a.rows
    ]
    jobs.sort(key=lambda j: -COST.get(j.config["method"], 1))
    return jobs


def measure_speed(a: argparse.Namespace) -> None:
    import lightning as L
    import torch

    from fmnist_ssl_speed import time_fit
    from vislearn.core.utils import write_json
    from vislearn.ops.neighbours import dataset_knn_bags
    from vislearn.tasks.ssl.run import build_datamodule, build_from_config

    torch.set_num_threads(a.threads)
    speeds: dict[str, list[float]] = {n: [] for n in ORDER}
    dms = {}
    for rep in range(a.repeats):
        for name in ORDER:
            cfg = recipe(name)
            if cfg["method"] == "csml":
                cfg["model"]["bag_cache"] = False  # every fit computes its epoch-0 bags
            dm = dms.get(name) or build_datamodule(cfg)
            dms[name] = dm
            L.seed_everything(rep, verbose=False)
            model = build_from_config(cfg, dm)
            speeds[name].append(time_fit(model, dm, a.batches, f"csml_kscl_{name}"))
            print(f"{name} repeat {rep}: {speeds[name][-1]:.0f} images/s", flush=True)
    med = {n: statistics.median(v) for n, v in speeds.items()}
    rows = [
        {
            "name": f"vislearn/{n}",
            "images_per_s": round(med[n], 1),
            "images_per_s_repeats": [round(x, 1) for x in speeds[n]],
            "step_cost_vs_moco_v2": round(med["moco_v2"] / med[n], 3),
            "step_cost_vs_moco_v2_asym": round(med["moco_v2_asym"] / med[n], 3),
        }
        for n in ORDER
    ]
    # CsMl's other cost: one kNN-bag refresh = momentum-encoder pass + exact search over 60k
    cfg = recipe("csml")
    dm = dms["csml"]
    model = build_from_config(cfg, dm)
    t0 = time.perf_counter()
    dataset_knn_bags(model.momentum_backbone, dm.train_set, cfg["model"]["bag_k"], "cpu")
    refresh = time.perf_counter() - t0
    epoch_s = len(dm.train_set) / med["csml"]
    settings = {
        "protocol": f"{a.repeats} interleaved repeats x {a.batches} batches of 256 (first "
        f"excluded), median; one process, {a.threads} threads; training step incl. "
        "augmentation, optimiser and online probe, no validation; images = anchors",
        "bag_refresh_seconds": round(refresh, 1),
        "bag_refresh_fraction_of_csml_epoch": round(refresh / epoch_s, 3),
        "hardware": f"{platform.machine()}, 2 CPU cores, torch {torch.__version__}, no GPU",
    }
    out = RESULTS / "fmnist_csml_kscl_speed.json"
    write_json(out, {"benchmark": "fmnist_csml_kscl_speed", "settings": settings, "rows": rows})
    print(json.dumps(rows, indent=1), settings)


def write_results(runs: list[dict], a: argparse.Namespace) -> None:
    import torch

    rows = aggregate(runs, METRICS, baseline="vislearn/moco_v2")
    # the matched-cost control of each row: one query direction <-> moco_v2_asym
    asym = {r["name"]: r for r in aggregate(runs, METRICS[:2], baseline="vislearn/moco_v2_asym")}
    for r in rows:
        method = r["name"].split("/")[1]
        for m in METRICS[:2]:
            if method in SYMMETRIC:
                r[f"{m}_diff_matched"] = r.get(f"{m}_diff")
            elif f"{m}_diff" in asym[r["name"]]:
                r[f"{m}_diff_matched"] = asym[r["name"]][f"{m}_diff"]
    speed_file = RESULTS / "fmnist_csml_kscl_speed.json"
    if speed_file.exists():
        speed = {s["name"]: s for s in json.loads(speed_file.read_text())["rows"]}
        for r in rows:
            s = speed.get(r["name"], {})
            for k in ("images_per_s", "images_per_s_seeds", "images_per_s_ci95"):
                if k in r:
                    r[k.replace("images_per_s", "images_per_s_concurrent_runs")] = r.pop(k)
            r.pop("images_per_s_diff", None)
            for k in ("images_per_s", "step_cost_vs_moco_v2", "step_cost_vs_moco_v2_asym"):
                if k in s:
                    r[k] = s[k]
    rows.sort(key=lambda r: ORDER.index(r["name"].split("/")[1]))
    settings = {
        "data": f"Fashion-MNIST ({a.dataset}), train 60k / test 10k, 28x28 grayscale",
        "epochs": a.epochs,
        "batch_size": 256,
        "seeds": {"main": a.seeds, "ablations": a.ablation_seeds},
        "protocol": "as docs/results/fmnist_ssl.json (same backbone, optimiser, augmentation, "
        "kNN k=200 T=0.07 on 60k/10k, 100-epoch linear probe); the moco_v2 runs are shared "
        "with that benchmark",
        "images_per_s": "from fmnist_csml_kscl_speed.json (one process, interleaved repeats, "
        "median); step_cost_vs_moco_v2 = MoCo v2 images/s / this images/s",
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, torch "
        f"{torch.__version__}, no GPU",
        "intervals": "mean over seeds; *_ci95: Student-t 95 % interval (n - 1 dof); *_diff: "
        "paired (same seed) difference against vislearn/moco_v2, with its 95 % t interval; "
        "*_diff_matched: the same against the control of equal query directions (moco_v2 for "
        f"{', '.join(SYMMETRIC)}, moco_v2_asym for every other row)",
        "recipes": {n: recipe(n)["model"] for n in ORDER},
        "notes": a.note,
    }
    out = RESULTS / "fmnist_csml_kscl.json"
    write_json_results(out, "fmnist_csml_kscl", settings, rows)
    print(f"wrote {out}")
    print(render_table(rows, [("kNN", "knn_top1"), ("linear", "linear_top1"), "images_per_s"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="moco_v2 and csml")
    p.add_argument("--ablation-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(ORDER), choices=ORDER, help="rows to run")
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--jobs", type=int, default=2, help="concurrent runs (threads each = 1)")
    p.add_argument("--cache", default=str(BENCH / ".cache" / "fmnist_ssl"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    p.add_argument("--note", default="", help="free-text note stored in settings.notes")
    p.add_argument("--speed", action="store_true", help="only time the steps (see above)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    if a.speed:
        measure_speed(a)
        return
    run_jobs(make_jobs(a), a.cache, a.jobs, report_only=a.report_only,
             import_paths=[BENCH], show=METRICS)  # fmt: skip
    a.rows = ORDER  # the report: every row of the table that is cached
    write_results(run_jobs(make_jobs(a), a.cache, 0, report_only=True), a)


if __name__ == "__main__":
    main()
