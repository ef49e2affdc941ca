"""Fashion-MNIST SSL benchmark: vislearn vs lightly for MoCo v2, SimCLR and BYOL, plus
random-init and supervised reference rows -> docs/results/fmnist_ssl.json.

Both implementations of a method get the same recipe (configs/fmnist_ssl/<method>.yaml):
backbone, device-side augmentation, batch, optimiser, schedule, epochs and seed. The two
runs of a (method, seed) pair are adjacent in the job table, so with ``--jobs 2`` they run
concurrently, one thread each, share the machine's load equally and their images/s are
directly comparable. ``vislearn/<method>_joint_views`` rows: the same recipe with
``model.joint_views=true``.

``--loss-scale-control`` adds ``lightly/byol_2x_step``: lightly's BYOL at twice the learning
rate and half the weight decay. The paper's loss ``2 - 2 cos`` (vislearn) has twice the
gradient of lightly's ``-cos``; with SGD the update ``lr (g + wd w)`` of the one equals
``2 lr (g / 2 + wd / 2 w)`` of the other, so this row takes vislearn's steps with lightly's
modules; ``vislearn/byol``'s ``knn_top1_vs_2x_step`` / ``linear_top1_vs_2x_step`` (it minus
this row, paired by seed) test whether the loss scale explains the gap between the two.

    python benchmarks/fmnist_ssl.py --epochs 4 --seeds 0 1 2 --jobs 2

Jobs run on :func:`vislearn.bench.run_jobs`: each finished run is cached under --cache by the
hash of its resolved recipe and seed (a changed recipe runs again), so an interrupted
benchmark resumes. Rows: mean, per-seed values, 95 % t interval, and the paired difference
of ``vislearn/<m>`` against ``lightly/<m>``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from vislearn.bench import Job, aggregate, render_table, rounded_paired_diff, run_jobs
from vislearn.bench import write_results as write_results_json

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
METHODS = ("moco_v2", "simclr", "byol")
METRICS = ("knn_top1", "linear_top1", "images_per_s")
# the job table: row impl -> (recipe, model overrides); "{m}" is each of --methods
IMPLS = {
    "vislearn": ("{m}", {}),
    "lightly": ("{m}", {}),
    "vislearn_joint": ("{m}", {"joint_views": True}),
    "supervised": ("supervised", {}),
    "random_init": ("supervised", {}),
}


def job_config(impl: str, method: str, epochs: int, dataset: str, model: dict | None = None):
    """The resolved config of one run (also used by fmnist_csml_kscl.py's job table, which
    shares this benchmark's cache)."""
    from vislearn.core.config import load_config

    recipe = load_config(
        ROOT / "configs" / "fmnist_ssl" / f"{method}.yaml",
        trainer={"max_epochs": epochs, "check_val_every_n_epoch": epochs, "progress": False},
        data={"dataset": dataset},
        model=model or {},
    )
    recipe.pop("seed")  # the job's seed replaces it
    recipe.pop("out")  # each job trains in its own run directory (ctx["run_dir"])
    return {"impl": impl, "method": method, "recipe": recipe}


SCALED = "lightly/byol_2x_step"  # --loss-scale-control (module docstring)


def row_name(impl: str, method: str) -> str:
    if impl in ("supervised", "random_init"):
        return impl
    if impl == "vislearn_joint":
        return f"vislearn/{method}_joint_views"
    return f"{impl}/{method}"


def make_jobs(a: argparse.Namespace) -> list[Job]:
    jobs = []
    for seed in a.seeds:  # vislearn and lightly adjacent -> run concurrently as a pair
        for m in a.methods:
            for impl in ("vislearn", "lightly", "vislearn_joint"):
                if impl == "vislearn_joint" and not a.joint_views:
                    continue
                recipe, model = IMPLS[impl]
                cfg = job_config(impl, recipe.format(m=m), a.epochs, a.dataset, model)
                jobs.append(Job(row_name(impl, m), seed, cfg, "fmnist_ssl:run_job"))
    if a.loss_scale_control and "byol" in a.methods:
        base = job_config("lightly", "byol", a.epochs, a.dataset)["recipe"]["model"]
        scaled = {"lr": 2 * base["lr"], "weight_decay": base["weight_decay"] / 2}
        cfg = job_config("lightly", "byol", a.epochs, a.dataset, scaled)
        jobs += [Job(SCALED, seed, cfg, "fmnist_ssl:run_job") for seed in a.seeds]
    for seed in a.seeds:  # the reference rows last, so they never break up a pair
        for impl in ("supervised", "random_init"):
            cfg = job_config(impl, "supervised", a.epochs, a.dataset)
            jobs.append(Job(row_name(impl, "supervised"), seed, cfg, "fmnist_ssl:run_job"))
    return jobs


def run_job(config: dict, seed: int, ctx: dict) -> dict:
    """Train one (impl, method, seed) and evaluate it offline; runs in a worker process."""
    import lightning as L

    from vislearn.engine.trainer import Throughput, build_trainer
    from vislearn.models import create_backbone
    from vislearn.tasks.ssl.run import build_datamodule, evaluate, pretrain

    cfg = {**config["recipe"], "seed": seed, "out": ctx["run_dir"]}
    impl = config["impl"]
    t0 = time.perf_counter()
    if impl == "random_init":
        L.seed_everything(seed, verbose=False)
        dm = build_datamodule(cfg)
        m = cfg["model"]
        backbone = create_backbone(m["backbone"], in_chans=dm.channels, **m["backbone_kwargs"])
        stats = {}
    elif impl == "lightly":
        from lightly_methods import LIGHTLY_METHODS  # a peer module next to this script

        L.seed_everything(seed, verbose=False)
        dm = build_datamodule(cfg)
        kwargs = {
            "in_chans": dm.channels,
            "image_size": dm.image_size,
            "num_classes": dm.num_classes,
            "seed": seed,
            **cfg["model"],
        }
        model = LIGHTLY_METHODS[config["method"]](**kwargs)
        tp = Throughput()
        trainer = build_trainer(ctx["run_dir"], callbacks=[tp], **cfg["trainer"])
        trainer.fit(model, datamodule=dm)
        backbone = model.backbone
        stats = {"images_per_s": tp.images_per_s, "train_seconds": tp.seconds}
    else:  # seed -> datamodule -> method -> trainer -> fit, as pipeline.pretrain does
        model, _, stats = pretrain(cfg)
        backbone = model.backbone
    if impl != "random_init":
        knn = model.trainer.callback_metrics["val/knn_top1"]
        stats["online_knn_top1"] = 100 * float(knn)
    e = cfg["eval"]
    res = evaluate(
        backbone,
        cfg["data"]["dataset"],
        knn_k=e["knn_k"],
        knn_t=e["knn_t"],
        linear_epochs=e["linear_epochs"],
        linear_lr=e["linear_lr"],
        device="cpu",
    )
    return {**res, **stats, "wall_seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--jobs", type=int, default=2, help="concurrent runs (threads each = 1)")
    p.add_argument("--no-joint-views", dest="joint_views", action="store_false",
                   help="skip the vislearn/<m>_joint_views rows")  # fmt: skip
    p.add_argument(
        "--loss-scale-control",
        action="store_true",
        help=f"add {SCALED}: lightly's BYOL at 2x lr, wd / 2 (vislearn's steps)",
    )
    p.add_argument("--cache", default=str(BENCH / ".cache" / "fmnist_ssl"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_ssl.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    p.add_argument("--note", default="", help="free-text note stored in settings.notes")
    a = p.parse_args()
    done = run_jobs(make_jobs(a), a.cache, a.jobs, report_only=a.report_only,
                    import_paths=[BENCH], show=METRICS)  # fmt: skip
    write_results(done, a)


def write_results(runs: list[dict], a: argparse.Namespace) -> None:
    import torch

    from vislearn.core.config import load_config

    rows = []
    for m in a.methods:  # vislearn/<m> (and its joint views) paired against lightly/<m>
        group = [r for r in runs if r["config"]["method"] == m]
        rows += aggregate(group, METRICS, baseline=f"lightly/{m}")
    rows += aggregate([r for r in runs if r["config"]["method"] == "supervised"], METRICS)
    by_name = {r["name"]: r for r in rows}
    speed_file = Path(a.out).with_name("fmnist_ssl_speed.json")
    if speed_file.exists():  # interleaved same-process timing (fmnist_ssl_speed.py) wins
        speed_doc = json.loads(speed_file.read_text())
        for s in (speed_doc.get("heads_and_losses") or speed_doc)["rows"]:
            if s["name"] in by_name:
                r = by_name[s["name"]]
                for k in ("images_per_s", "images_per_s_seeds", "images_per_s_ci95"):
                    if k in r:
                        r[k.replace("images_per_s", "images_per_s_concurrent_runs")] = r.pop(k)
                r.pop("images_per_s_diff", None)
                r["images_per_s"] = s["images_per_s"]
                if "speed_ratio_vs_lightly" in s:
                    r["speed_ratio_vs_lightly"] = s["speed_ratio_vs_lightly"]
    for m in a.methods:  # speed as a ratio against the peer, per seed (same-seed runs are paired)
        ours = [r for r in runs if r["name"] == f"vislearn/{m}"]
        peer_by_seed = {
            r["seed"]: r["metrics"]["images_per_s"] for r in runs if r["name"] == f"lightly/{m}"
        }
        ratios = [
            r["metrics"]["images_per_s"] / peer_by_seed[r["seed"]]
            for r in sorted(ours, key=lambda r: r["seed"])
            if r["seed"] in peer_by_seed
        ]
        if ratios:
            by_name[f"vislearn/{m}"]["speed_ratio_concurrent_runs_per_seed"] = [
                round(x, 3) for x in ratios
            ]
    for k in [k for k in by_name.get(SCALED, {}) if k.startswith("images_per_s")]:
        del by_name[SCALED][k]  # a control of accuracy, timed on whatever else the machine ran
    if SCALED in by_name and "vislearn/byol" in by_name:
        for k in ("knn_top1", "linear_top1"):
            ours, scaled = ({r["seed"]: r["metrics"][k] for r in runs if r["name"] == n}
                            for n in ("vislearn/byol", SCALED))  # fmt: skip
            by_name["vislearn/byol"][f"{k}_vs_2x_step"] = rounded_paired_diff(ours, scaled)
    order = [
        n for m in METHODS for n in (f"vislearn/{m}", f"lightly/{m}", f"vislearn/{m}_joint_views")
    ]
    order.insert(order.index("lightly/byol") + 1, SCALED)
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
        "intervals": "mean over seeds; *_ci95: Student-t 95 % interval (n - 1 dof); *_diff: "
        "paired (same seed) difference against lightly/<method>, with its 95 % t interval",
        "recipes": recipes,
        "notes": a.note,
    }
    write_results_json(a.out, "fmnist_ssl", settings, rows)
    print(f"wrote {a.out}")
    print(render_table(rows, [("kNN", "knn_top1"), ("linear", "linear_top1"), "images_per_s"]))


if __name__ == "__main__":
    main()
