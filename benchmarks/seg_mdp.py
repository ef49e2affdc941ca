"""Multi-dataset segmentation pretraining benchmark: random init, single-dataset, naive
multi-dataset and MDP pretraining, each fine-tuned on every synthetic target data set at 100 %
and at a low fraction of its labels -> docs/results/seg_mdp.json (metric ``miou``, %).

Data: the three synthetic sets of ``vislearn.data.synthetic.SEG_DATASETS`` (Fashion-MNIST items
on real photos / generated colour fields, 64x64, 2,000 train and 500 test images each): ``fine``
(10 classes + background), ``coarse`` (tops / bottoms / footwear / bags) and ``partial`` (five
classes labelled, the other items background) -- different taxonomies and styles.

Protocol, for each target T and labelled fraction f (1.0 and ``--low-fraction``, 0.1):

* ``random_init``: fine-tune from random weights;
* ``single_dataset``: pretrain with cross-entropy on T alone (its f subset);
* ``naive_multi``: pretrain on all three sets with one head per set (no prototypes, no mixing);
* ``mdp``: MDP pretraining on all three sets (configs/seg_mdp/pretrain_mdp.yaml).

Pretraining only ever sees the labels fine-tuning may use: T contributes the same seeded f
subset (``data.fractions``), the other sets all their labels. At f = 1 the multi-dataset
pretrainings are the same for every target and run once. Every pretrained row uses the same
network, batch, optimiser and number of steps (``--pretrain-steps``); every row is then
fine-tuned with configs/seg_mdp/finetune.yaml for ``--finetune-steps`` steps (backbone and
decoder transferred, new classifier) and scored by mIoU on T's test split.

    python benchmarks/seg_mdp.py --jobs 2 --seeds 0 1 2    # the full benchmark
    python benchmarks/seg_mdp.py --smoke --out /tmp/seg_mdp.json --cache /tmp/seg_mdp_cache
    python benchmarks/seg_mdp.py --report-only

Cost: 14 pretraining runs (mdp and naive_multi once at 100 % and once per target at the low
fraction, single_dataset per target and fraction) and 24 fine-tuning runs. Measured on the
2-core machine with --jobs 2 (one thread per run; short profiling jobs shared the cores
during pretraining): 0.32 s per MDP step, 0.25-0.26 s for the other pretrainings and for
fine-tuning; about 35 min of pretraining and 36 min of fine-tuning.

Jobs run on :func:`vislearn.bench.run_jobs`: finished runs are cached under --cache by the hash
of their resolved recipe and seed (a fine-tuning job's config holds its pretraining job's key;
rendered data sets under cache/data), so an interrupted benchmark resumes and a changed recipe
runs again. Rows: mean, per-seed values, 95 % t interval and the paired (same seed)
difference against ``random_init`` at the same target and fraction.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from vislearn.bench import Job, aggregate, run_jobs
from vislearn.bench import write_results as write_json_results

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
METRICS = ("miou", "pixel_acc", "seconds_per_step")

TARGETS = ("fine", "coarse", "partial")
ROWS = ("random_init", "single_dataset", "naive_multi", "mdp")
RECIPE = {"single_dataset": "single", "naive_multi": "naive_multi", "mdp": "mdp"}
SMOKE = {"num_train": 32, "num_test": 8, "image_size": 32, "pretrain_steps": 2, "finetune_steps": 2}


def frac_tag(f: float) -> str:
    return f"{round(100 * f):d}pct"


def _sizes(a: argparse.Namespace) -> dict:
    return {"num_train": a.num_train, "num_test": a.num_test, "image_size": a.image_size}


def _recipe(name: str, steps: int, data: dict, **updates) -> dict:
    from vislearn.core.config import load_config
    from vislearn.tasks.seg.run import SEG_DEFAULTS

    cfg = load_config(
        ROOT / "configs" / "seg_mdp" / f"{name}.yaml",
        defaults=SEG_DEFAULTS,
        data=data,
        trainer={"max_steps": steps, "progress": False, "accelerator": "cpu"},
        **updates,
    )
    cfg.pop("seed")  # the job's
    cfg.pop("out")  # the job's run directory
    return cfg


def run_pretrain_job(config: dict, seed: int, ctx: dict) -> dict:
    """One pretraining run (worker process)."""
    from vislearn.tasks.seg.run import pretrain_seg

    cfg = {**config["recipe"], "seed": seed, "out": ctx["run_dir"]}
    cfg["data"] = {**cfg["data"], "cache_dir": ctx["resources"]["data_cache"]}
    t0 = time.perf_counter()
    module, out = pretrain_seg(cfg)
    steps = cfg["trainer"]["max_steps"]
    return {
        "pretrained": str(out / "pretrained.safetensors"),
        "train_seconds": module.train_seconds,
        "seconds_per_step": module.train_seconds / steps,
        "wall_seconds": time.perf_counter() - t0,
    }


def run_finetune_job(config: dict, seed: int, ctx: dict) -> dict:
    """One fine-tuning run + evaluation (worker process)."""
    from vislearn.tasks.seg.run import finetune_seg

    cfg = {**config["recipe"], "seed": seed, "out": ctx["run_dir"]}
    cfg["init"] = ctx["resources"].get("init")
    cfg["data"] = {**cfg["data"], "cache_dir": ctx["resources"]["data_cache"]}
    t0 = time.perf_counter()
    module, _, scores = finetune_seg(cfg)
    steps = cfg["trainer"]["max_steps"]
    return {
        "miou": 100 * scores["miou"],
        "pixel_acc": 100 * scores["pixel_acc"],
        "mean_acc": 100 * scores["mean_acc"],
        "iou": {k: None if v is None else 100 * v for k, v in scores["iou"].items()},
        "train_seconds": module.train_seconds,
        "seconds_per_step": module.train_seconds / steps,
        "wall_seconds": time.perf_counter() - t0,
    }


def prepare_data(a: argparse.Namespace) -> None:
    """Render every data set once in this process (workers then read the cache)."""
    from vislearn.core.config import load_config
    from vislearn.tasks.seg.data import build_segmentation_dataset
    from vislearn.tasks.seg.run import SEG_DEFAULTS

    cfg = load_config(
        ROOT / "configs" / "seg_mdp" / "finetune.yaml",
        defaults=SEG_DEFAULTS,
        data={
            "num_train": a.num_train,
            "num_test": a.num_test,
            "image_size": a.image_size,
            "cache_dir": str(Path(a.cache) / "data"),
        },
    )
    for t in TARGETS:
        for split in ("train", "test"):
            build_segmentation_dataset(f"synthetic:{t}", split, cfg["data"])


def pretrain_jobs(a: argparse.Namespace) -> list[Job]:
    """Pretraining job table: (row, target, fraction) for each seed; at f = 1 the
    multi-dataset rows run once for every target ("all")."""
    table = []
    for f in a.fractions:
        for row in ("mdp", "naive_multi"):
            table += [(row, t, f, list(TARGETS)) for t in (["all"] if f == 1.0 else a.targets)]
        table += [("single_dataset", t, f, [t]) for t in a.targets]
    res = {"data_cache": str(Path(a.cache) / "data")}
    jobs = []
    for seed in a.seeds:
        for row, t, f, pool in table:
            data = {**_sizes(a), "datasets": [f"synthetic:{p}" for p in pool],
                    "fractions": {t: f} if t != "all" else {}}  # fmt: skip
            recipe = _recipe(f"pretrain_{RECIPE[row]}", a.pretrain_steps, data)
            config = {"row": row, "target": t, "fraction": f, "recipe": recipe}
            name = f"pretrain/{row}_{t}_{frac_tag(f)}"
            jobs.append(Job(name, seed, config, "seg_mdp:run_pretrain_job", resources=res))
    return jobs


def finetune_jobs(a: argparse.Namespace, pre: list[Job], cache: Path) -> list[Job]:
    """Fine-tuning job table: every row x target x fraction x seed; a pretrained row's
    config holds its pretraining job's key, its checkpoint path is a resource."""
    by = {(j.config["row"], j.config["target"], j.config["fraction"], j.seed): j for j in pre}
    jobs = []
    for seed in a.seeds:
        for t in a.targets:
            for f in a.fractions:
                data = {**_sizes(a), "target": f"synthetic:{t}", "fraction": f}
                recipe = _recipe("finetune", a.finetune_steps, data)
                for row in ROWS:
                    config = {"row": row, "target": t, "fraction": f, "recipe": recipe}
                    res = {"data_cache": str(cache / "data")}
                    if row != "random_init":
                        source = t if (row == "single_dataset" or f != 1.0) else "all"
                        p = by[(row, source, f, seed)]
                        config["init_key"] = p.key
                        res["init"] = str(p.run_dir(cache / "pretrain") / "pretrained.safetensors")
                    jobs.append(Job(row, seed, config, "seg_mdp:run_finetune_job", resources=res))
    return jobs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    p.add_argument("--low-fraction", type=float, default=0.1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--finetune-steps", type=int, default=600)
    p.add_argument("--num-train", type=int, default=2000, help="train images per data set")
    p.add_argument("--num-test", type=int, default=500, help="test images per data set")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument(
        "--jobs", type=int, default=2, help="concurrent runs (threads each = 1); 0: in-process"
    )
    p.add_argument("--smoke", action="store_true", help="tiny sets, 32 px, 2 steps per run")
    p.add_argument("--cache", default=str(BENCH / ".cache" / "seg_mdp"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "seg_mdp.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    a = p.parse_args()
    if a.smoke:
        for k, v in SMOKE.items():
            setattr(a, k, v)
    a.fractions = [1.0, a.low_fraction]
    cache = Path(a.cache)
    if not a.report_only:
        prepare_data(a)

    t0 = time.perf_counter()
    run = {"n_jobs": a.jobs, "report_only": a.report_only, "import_paths": [BENCH],
           "show": ("miou", "seconds_per_step")}  # fmt: skip
    jobs = pretrain_jobs(a)
    pre = run_jobs(jobs, cache / "pretrain", **run)
    done = {r["key"] for r in pre}
    ft_jobs = [  # report-only on a partial cache: skip rows whose pretraining is missing
        j
        for j in finetune_jobs(a, jobs, cache)
        if "init_key" not in j.config or j.config["init_key"] in done
    ]
    ft = run_jobs(ft_jobs, cache / "finetune", **run)
    wall = time.perf_counter() - t0
    write_results(pre, ft, a, wall)


def write_results(pre: list[dict], ft: list[dict], a: argparse.Namespace, wall: float) -> None:
    import torch

    from vislearn.core.config import load_config
    from vislearn.tasks.seg.run import SEG_DEFAULTS

    ft_recs = [{**r, **{k: r["config"][k] for k in ("target", "fraction")}} for r in ft]
    order = {(n, t, f): i for i, (t, f, n) in enumerate(
        (t, f, n) for t in a.targets for f in a.fractions for n in ROWS)}  # fmt: skip
    ft_recs.sort(key=lambda r: order.get((r["name"], r["target"], r["fraction"]), len(order)))
    rows = aggregate(ft_recs, METRICS, baseline="random_init",
                     group_keys=("name", "target", "fraction"))  # fmt: skip
    for row in rows:
        gk = (row["name"], row["target"], row["fraction"])
        first = next(r["metrics"] for r in ft_recs if (r["name"], r["target"], r["fraction"]) == gk)
        row["iou"] = {k: None if v is None else round(v, 2) for k, v in first["iou"].items()}
        for k in [k for k in row if k.startswith("seconds_per_step")]:
            row["finetune_" + k] = row.pop(k)
    step_time: dict[str, list[float]] = {}
    for r in pre:
        key = f"pretrain/{r['config']['row']}"
        step_time.setdefault(key, []).append(r["metrics"]["seconds_per_step"])
    for r in ft:
        step_time.setdefault("finetune", []).append(r["metrics"]["seconds_per_step"])
    recipe = load_config(ROOT / "configs" / "seg_mdp" / "pretrain_mdp.yaml", defaults=SEG_DEFAULTS)
    settings = {
        "data": f"synthetic segmentation sets fine / coarse / partial "
        f"(vislearn.data.synthetic.SEG_DATASETS), {a.image_size}x{a.image_size}, "
        f"{a.num_train} train / {a.num_test} test images each",
        "targets": a.targets,
        "fractions": a.fractions,
        "protocol": "pretraining sees only the target's labelled fraction (same seeded "
        "subset as fine-tuning); the other sets in full; single_dataset = the target alone",
        "pretrain_steps": a.pretrain_steps,
        "finetune_steps": a.finetune_steps,
        "batch_size": recipe["data"]["batch_size"],
        "network": "resnet_tiny (stem small_ds, width 16) + DeepLabv3 head (ASPP rates 1/2/3, "
        "64 channels), output stride 4",
        "optimizer": "pretraining: SGD momentum 0.9, lr 0.02, wd 1e-4, poly 0.9; fine-tuning: "
        "AdamW lr 2e-3, wd 1e-4, poly 0.9",
        "mdp": {k: v for k, v in recipe["model"].items() if k not in ("backbone_kwargs",)},
        "finetune": "configs/seg_mdp/finetune.yaml: backbone + decoder transferred, new "
        "classifier, all layers at one lr",
        "metric": "miou: mean IoU (%) over classes present in truth or prediction, ignore "
        "index 255 excluded, on the target's test split",
        "seconds_per_step": {k: round(statistics.mean(v), 3) for k, v in step_time.items()},
        "wall_seconds_this_invocation": round(wall, 1),
        "seeds": a.seeds,
        "intervals": "mean over seeds; *_ci95: Student-t 95 % interval (n - 1 dof); *_diff: "
        "paired (same seed) difference against random_init at the same target and fraction",
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, torch "
        f"{torch.__version__}, no GPU; {a.jobs} runs at a time",
        "smoke": bool(a.smoke),
    }
    write_json_results(a.out, "seg_mdp", settings, rows)
    print(f"wrote {a.out}")
    for r in rows:
        print(json.dumps({k: r[k] for k in ("name", "target", "fraction", "miou")}))
    print("seconds per step:", json.dumps(settings["seconds_per_step"]))


if __name__ == "__main__":
    main()
