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

    python benchmarks/seg_mdp.py --jobs 2                  # the full benchmark
    python benchmarks/seg_mdp.py --smoke --out /tmp/seg_mdp.json --cache /tmp/seg_mdp_cache
    python benchmarks/seg_mdp.py --report-only

Cost: 14 pretraining runs (mdp and naive_multi once at 100 % and once per target at the low
fraction, single_dataset per target and fraction) and 24 fine-tuning runs. Measured on the
2-core machine with --jobs 2 (one thread per run; short profiling jobs shared the cores
during pretraining): 0.32 s per MDP step, 0.25-0.26 s for the other pretrainings and for
fine-tuning; about 35 min of pretraining and 36 min of fine-tuning.

Finished runs are cached under --cache (one JSON per run; rendered data sets under
cache/data), so an interrupted benchmark resumes.
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

TARGETS = ("fine", "coarse", "partial")
ROWS = ("random_init", "single_dataset", "naive_multi", "mdp")
RECIPE = {"single_dataset": "single", "naive_multi": "naive_multi", "mdp": "mdp"}
SMOKE = {"num_train": 32, "num_test": 8, "image_size": 32, "pretrain_steps": 2, "finetune_steps": 2}


def frac_tag(f: float) -> str:
    return f"{round(100 * f):d}pct"


def _data_overrides(job: dict) -> dict:
    return {
        "num_train": job["num_train"],
        "num_test": job["num_test"],
        "image_size": job["image_size"],
        "cache_dir": str(Path(job["cache_root"]) / "data"),
    }


def run_pretrain_job(job: dict) -> dict:
    """One pretraining run (worker process)."""
    import torch

    from vislearn.core.config import load_config
    from vislearn.tasks.seg.run import SEG_DEFAULTS, pretrain_seg

    torch.set_num_threads(job["threads"])
    specs = [f"synthetic:{t}" for t in job["pool"]]
    fractions = {job["target"]: job["fraction"]} if job["target"] != "all" else {}
    cfg = load_config(
        ROOT / "configs" / "seg_mdp" / f"pretrain_{RECIPE[job['row']]}.yaml",
        defaults=SEG_DEFAULTS,
        seed=job["seed"],
        out=str(Path(job["cache"]) / "runs" / job["key"]),
        data={**_data_overrides(job), "datasets": specs, "fractions": fractions},
        trainer={"max_steps": job["epochs"], "progress": False, "accelerator": "cpu"},
    )
    t0 = time.perf_counter()
    module, out = pretrain_seg(cfg)
    return {
        **job,
        "pretrained": str(out / "pretrained.safetensors"),
        "train_seconds": module.train_seconds,
        "seconds_per_step": module.train_seconds / job["epochs"],
        "wall_seconds": time.perf_counter() - t0,
    }


def run_finetune_job(job: dict) -> dict:
    """One fine-tuning run + evaluation (worker process)."""
    import torch

    from vislearn.core.config import load_config
    from vislearn.tasks.seg.run import SEG_DEFAULTS, finetune_seg

    torch.set_num_threads(job["threads"])
    cfg = load_config(
        ROOT / "configs" / "seg_mdp" / "finetune.yaml",
        defaults=SEG_DEFAULTS,
        seed=job["seed"],
        init=job["init"],
        out=str(Path(job["cache"]) / "runs" / job["key"]),
        data={
            **_data_overrides(job),
            "target": f"synthetic:{job['target']}",
            "fraction": job["fraction"],
        },
        trainer={"max_steps": job["epochs"], "progress": False, "accelerator": "cpu"},
    )
    t0 = time.perf_counter()
    module, _, scores = finetune_seg(cfg)
    return {
        **job,
        "miou": 100 * scores["miou"],
        "pixel_acc": 100 * scores["pixel_acc"],
        "mean_acc": 100 * scores["mean_acc"],
        "iou": {k: None if v is None else 100 * v for k, v in scores["iou"].items()},
        "train_seconds": module.train_seconds,
        "seconds_per_step": module.train_seconds / job["epochs"],
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


def pretrain_jobs(a: argparse.Namespace) -> list[dict]:
    jobs = []
    for seed in a.seeds:
        for f in a.fractions:
            for row in ("mdp", "naive_multi"):  # at f = 1 one run serves every target
                for t in ["all"] if f == 1.0 else a.targets:
                    jobs.append({"row": row, "target": t, "fraction": f, "pool": list(TARGETS)})
                    jobs[-1]["seed"] = seed
            for t in a.targets:
                jobs.append({"row": "single_dataset", "target": t, "fraction": f, "pool": [t]})
                jobs[-1]["seed"] = seed
    for j in jobs:
        j.update(
            impl="pretrain",
            method=f"{j['row']}_{j['target']}_{frac_tag(j['fraction'])}",
            **_size_keys(a),
        )
    return jobs


def _size_keys(a: argparse.Namespace) -> dict:
    return {
        "num_train": a.num_train,
        "num_test": a.num_test,
        "image_size": a.image_size,
        "cache_root": a.cache,
    }


def run_jobs(jobs: list[dict], steps: int, cache: Path, a: argparse.Namespace, worker) -> list:
    """:func:`fmnist_ssl.run_pending` (``--jobs`` worker processes), or with ``--jobs 0`` the
    same caching with every run in this process (no per-run interpreter start: smoke tests)."""
    if a.jobs > 0:
        return run_pending(jobs, steps, "synthetic_seg", a.seeds, cache, a.jobs, a.report_only,
                           worker)  # fmt: skip
    done = run_pending(jobs, steps, "synthetic_seg", a.seeds, cache, 1, True, worker)
    have = {r["key"] for r in done}
    from vislearn.core.utils import write_json

    for job in jobs:
        if job["key"] in have or a.report_only:
            continue
        job["threads"] = 1
        row = worker(job)
        write_json(cache / f"{job['key']}.json", row)
        print(json.dumps({k: row.get(k) for k in ("key", "miou", "seconds_per_step")}), flush=True)
        done.append(row)
    return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    p.add_argument("--low-fraction", type=float, default=0.1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--finetune-steps", type=int, default=600)
    p.add_argument("--num-train", type=int, default=2000, help="train images per data set")
    p.add_argument("--num-test", type=int, default=500, help="test images per data set")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument(
        "--jobs", type=int, default=2, help="concurrent runs (threads each = 1); 0: in-process"
    )
    p.add_argument("--smoke", action="store_true", help="tiny sets, 32 px, 2 steps per run")
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache" / "seg_mdp"))
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
    pre = run_jobs(pretrain_jobs(a), a.pretrain_steps, cache / "pretrain", a, run_pretrain_job)
    pretrained = {
        (r["row"], r["target"], r["fraction"], r["seed"]): r["pretrained"]
        for r in pre
        if (r.get("num_train"), r.get("image_size")) == (a.num_train, a.image_size)
    }
    ft_jobs = []
    for seed in a.seeds:
        for t in a.targets:
            for f in a.fractions:
                for row in ROWS:
                    init = None
                    if row != "random_init":
                        source = t if (row == "single_dataset" or f != 1.0) else "all"
                        init = pretrained.get((row, source, f, seed))
                        if init is None:
                            continue  # not pretrained (report-only on a partial cache)
                    ft_jobs.append(
                        {
                            "impl": "finetune",
                            "row": row,
                            "method": f"{row}_{t}_{frac_tag(f)}",
                            "target": t,
                            "fraction": f,
                            "seed": seed,
                            "init": init,
                            **_size_keys(a),
                        }
                    )
    ft = run_jobs(ft_jobs, a.finetune_steps, cache / "finetune", a, run_finetune_job)
    wall = time.perf_counter() - t0
    write_results(pre, ft, a, wall)


def write_results(pre: list[dict], ft: list[dict], a: argparse.Namespace, wall: float) -> None:
    import torch

    from vislearn.core.config import load_config
    from vislearn.core.utils import write_json
    from vislearn.tasks.seg.run import SEG_DEFAULTS

    groups: dict[tuple, list[dict]] = {}
    for r in ft:
        if (r.get("num_train"), r.get("image_size")) != (a.num_train, a.image_size):
            continue
        if r["target"] not in a.targets:
            continue
        groups.setdefault((r["row"], r["target"], r["fraction"]), []).append(r)
    rows = []
    for t in a.targets:
        for f in a.fractions:
            for name in ROWS:
                rs = sorted(groups.get((name, t, f), []), key=lambda r: r["seed"])
                if not rs:
                    continue
                row = {
                    "name": name,
                    "target": t,
                    "fraction": f,
                    "miou": round(statistics.mean(r["miou"] for r in rs), 2),
                    "pixel_acc": round(statistics.mean(r["pixel_acc"] for r in rs), 2),
                    "seeds": [r["seed"] for r in rs],
                }
                if len(rs) > 1:
                    row["miou_per_seed"] = [round(r["miou"], 2) for r in rs]
                row["iou"] = {
                    k: None if v is None else round(v, 2) for k, v in rs[0]["iou"].items()
                }
                row["finetune_seconds_per_step"] = round(
                    statistics.mean(r["seconds_per_step"] for r in rs), 3
                )
                rows.append(row)
    step_time: dict[str, list[float]] = {}
    for r in pre:
        step_time.setdefault(f"pretrain/{r['row']}", []).append(r["seconds_per_step"])
    for r in ft:
        step_time.setdefault("finetune", []).append(r["seconds_per_step"])
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
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, torch "
        f"{torch.__version__}, no GPU; {a.jobs} runs at a time",
        "smoke": bool(a.smoke),
    }
    write_json(a.out, {"benchmark": "seg_mdp", "settings": settings, "rows": rows})
    print(f"wrote {a.out}")
    for r in rows:
        print(json.dumps({k: r[k] for k in ("name", "target", "fraction", "miou")}))
    print("seconds per step:", json.dumps(settings["seconds_per_step"]))


if __name__ == "__main__":
    main()
