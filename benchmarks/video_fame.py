"""Synthetic motion benchmark where motion is the only way to win: video MoCo vs video MoCo +
FAME at equal epochs, with random-init, FAME-with-true-masks and supervised reference rows
-> docs/results/video_fame.json.

Data (``configs/base/video_synth.yaml``, ``data.motion_design: appearance_swap``,
:func:`vislearn.data.synthetic.appearance_swap_videos`): each video renders one continuous
trajectory (direction, speed, rotation, scaling) over one random photo crop twice, with a
different Fashion-MNIST item and tint in each half; the two training clips of a video come
from different halves (no shared frame), so they share motion and background, not
appearance. Motion labels: 8 direction bins (chance 12.5 %). The training split is
background-biased (80 % of videos take a photo of their direction class's subset), an
unbiased training split (``background_bias=0``, other videos) trains the headline probe, and
the test split is unbiased.

Rows (``ROWS``):

* ``random_init``: the untrained backbone (seeded with the run seed);
* ``moco_video``: video MoCo (``configs/video_synth/moco_video.yaml``);
* ``fame``: the same recipe, same crops and jitters step for step, plus FAME on the first
  clip (``fame.yaml``);
* ``fame_gt_masks``: FAME with the ground-truth foreground (the area the sprite sweeps in
  the cropped clip) instead of the estimated mask (``fame_gt_masks.yaml``);
* ``supervised_unbiased``: cross-entropy on the motion labels of the *unbiased* training
  split (the ceiling of the backbone and schedule; ``supervised_video.yaml`` +
  ``data.background_bias=0``);
* ``fame_beta0.2`` / ``0.3`` / ``0.5`` (only with ``--rows``): FAME at another beta.

Metrics of every row, on frozen features averaged over ``eval.video_clips`` clips (clips
alternate between the two halves): ``unbiased_probe_top1`` (headline: linear probe trained on
the unbiased training split, tested on the test split), ``biased_probe_top1`` (the probe
trained on the biased split), ``background_var_share`` / ``motion_var_share`` (share of the
test-feature variance explained by the photo identity / the direction class),
``background_probe_top1`` (photo identity from the unbiased split, chance 1/22) and
``retrieval_r1`` (test queries vs the unbiased training gallery). ``val_probe_top1`` trains
the probe on the first half of the unbiased training split and tests it on the second half:
recipes are chosen on it, never on the test split. Rows: mean, per-seed values,
95 % t interval and the paired (same seed) difference against ``moco_video``.

    python benchmarks/video_fame.py --epochs 40 --seeds 0 1 2 --jobs 2

``--checks`` measures whether the benchmark can separate methods (no training; seconds):
colour-histogram nearest neighbour of the pair's sprites, frame overlap of the pairs, the
share of the clip's own background kept by FAME's mask for several beta.

A smoke run (seconds, writes elsewhere):

    python benchmarks/video_fame.py --epochs 1 --seeds 0 --smoke \\
        --out /tmp/video_fame.json --cache /tmp/video_fame_cache

``--set section.key=value`` overrides every recipe; runs are cached under --cache by the hash
of their resolved recipe and seed (:func:`vislearn.bench.run_jobs`), so an interrupted run
resumes and a changed recipe runs again.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from vislearn.bench import Job, run_jobs
from vislearn.bench import aggregate as aggregate_rows
from vislearn.bench import write_results as write_json_results

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

#: result row name -> (vislearn method, recipe under configs/video_synth/, extra overrides)
ROWS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "random_init": ("moco_video", "moco_video.yaml", ()),  # its backbone, data, eval
    "moco_video": ("moco_video", "moco_video.yaml", ()),
    "fame": ("fame", "fame.yaml", ()),
    "fame_gt_masks": ("fame", "fame_gt_masks.yaml", ()),
    "supervised_unbiased": (
        "supervised_video",
        "supervised_video.yaml",
        ("data.background_bias=0",),
    ),
    # the beta sweep (not in the default --rows; the recipe's beta is 0.25)
    "fame_beta0.2": ("fame", "fame.yaml", ("model.fame_beta=0.2",)),
    "fame_beta0.3": ("fame", "fame.yaml", ("model.fame_beta=0.3",)),
    "fame_beta0.5": ("fame", "fame.yaml", ("model.fame_beta=0.5",)),
}
DEFAULT_ROWS = tuple(name for name in ROWS if not name.startswith("fame_beta"))
METRICS = (
    "val_probe_top1",
    "unbiased_probe_top1",
    "biased_probe_top1",
    "background_var_share",
    "motion_var_share",
    "background_probe_top1",
    "retrieval_r1",
    "online_knn_top1",
    "s_per_step",
    "train_seconds",
    "wall_seconds",
)
#: tiny settings of --smoke (seconds per run)
SMOKE = [
    "data.num_train=48",
    "data.num_test=24",
    "data.batch_size=16",
    "data.knn_bank_size=48",
    "model.backbone_kwargs.width=4",
    "eval.linear_epochs=5",
    "eval.video_clips=2",
]


def recipe(name: str, epochs: int, overrides: list[str]) -> dict:
    """Row ``name``'s resolved recipe (``seed`` and ``out`` are the job's)."""
    from vislearn.core.config import load_config

    _, file, extra = ROWS[name]
    cfg = load_config(
        ROOT / "configs" / "video_synth" / file,
        [*overrides, *extra],
        trainer={"max_epochs": epochs, "check_val_every_n_epoch": epochs, "progress": False},
    )
    cfg.pop("seed")
    cfg.pop("out")
    return cfg


def make_jobs(a: argparse.Namespace, overrides: list[str]) -> list[Job]:
    """The job table: every --rows row at every seed (the evaluation data is moco_video's)."""
    data = recipe("moco_video", a.epochs, overrides)["data"]
    return [
        Job(
            name,
            seed,
            {"row": name, "recipe": recipe(name, a.epochs, overrides), "eval_data": data},
            "video_fame:run_job",
        )  # fmt: skip
        for seed in a.seeds
        for name in a.rows
    ]


def evaluate(backbone, cfg: dict, data: dict, seed: int) -> dict:
    """The frozen-feature metrics of the module docstring (in %), on the splits of ``data``
    (biased training split, unbiased training split, test split)."""
    import torch

    from vislearn.eval.linear import linear_probe
    from vislearn.eval.video import clip_retrieval, extract_clip_features, variance_share
    from vislearn.tasks.ssl.run import build_video_datamodule

    e = cfg["eval"]
    k = int(e["video_clips"])
    base = {**data, "batch_size": 1, "mask_channel": False}

    def splits(bias: float):
        c = {**cfg, "seed": seed, "data": {**base, "background_bias": bias}}
        return build_video_datamodule(c, clips_per_video=1, online_eval=False)

    biased, unbiased = splits(data["background_bias"]), splits(0.0)
    crop = cfg["model"].get("image_size")
    feats = {}
    for name, dm, split in (
        ("b", biased, "train"),
        ("u", unbiased, "train"),
        ("t", biased, "test"),
    ):
        ds = dm.split(split, "uniform", k)
        x, y = extract_clip_features(backbone, ds, device="cpu", crop_size=crop)
        bg = torch.as_tensor(dm.split(split, target="background").labels)
        feats[name] = (x, y, bg)
    probe = {"epochs": e["linear_epochs"], "lr": e["linear_lr"], "seed": seed}
    (xb, yb, _), (xu, yu, bu), (xt, yt, bt) = feats["b"], feats["u"], feats["t"]
    pct = 100.0
    half = len(xu) // 2  # recipe selection: never the test split
    val = linear_probe(xu[:half], yu[:half], xu[half:], yu[half:], **probe)["test_top1"]
    return {
        "val_probe_top1": pct * val,
        "unbiased_probe_top1": pct * linear_probe(xu, yu, xt, yt, **probe)["test_top1"],
        "biased_probe_top1": pct * linear_probe(xb, yb, xt, yt, **probe)["test_top1"],
        "background_var_share": pct * variance_share(xt, bt),
        "motion_var_share": pct * variance_share(xt, yt),
        "background_probe_top1": pct * linear_probe(xu, bu, xt, bt, **probe)["test_top1"],
        "retrieval_r1": pct * clip_retrieval(xt, yt, xu, yu, (1,))["r1"],
    }


def run_job(config: dict, seed: int, ctx: dict) -> dict:
    """Train one (row, seed) and evaluate it; runs in a worker process."""
    import lightning as L

    from vislearn.engine.trainer import Throughput, build_trainer
    from vislearn.models import create_backbone
    from vislearn.tasks.ssl.run import build_datamodule, build_from_config

    cfg = {**config["recipe"], "seed": seed}
    L.seed_everything(seed, verbose=False)
    t0 = time.perf_counter()
    m = cfg["model"]
    stats: dict = {}
    if config["row"] == "random_init":
        chans = cfg["data"]["channels"] or 3
        backbone = create_backbone(m["backbone"], in_chans=chans, **m["backbone_kwargs"])
    else:
        dm = build_datamodule(cfg)
        model = build_from_config(cfg, dm)
        tp = Throughput()
        trainer = build_trainer(ctx["run_dir"], callbacks=[tp], **cfg["trainer"])
        trainer.fit(model, datamodule=dm)
        backbone = model.backbone
        metrics = trainer.callback_metrics
        stats = {
            "train_seconds": tp.seconds,
            "steps": trainer.global_step,
            "s_per_step": tp.seconds / max(1, trainer.global_step),
        }
        if "val/knn_top1" in metrics:
            stats["online_knn_top1"] = 100 * float(metrics["val/knn_top1"])
    res = evaluate(backbone.eval(), cfg, config["eval_data"], seed)
    return {**res, **stats, "wall_seconds": time.perf_counter() - t0}


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per name (order of :data:`ROWS`): mean, per-seed values, 95 % interval and
    the paired difference against ``moco_video``."""
    runs = sorted(runs, key=lambda r: list(ROWS).index(r["name"]))
    rows = aggregate_rows(runs, METRICS, baseline="moco_video", ndigits=3)
    for row in rows:
        row["method"] = ROWS[row["name"]][0]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), choices=list(ROWS))
    p.add_argument("--jobs", type=int, default=1, help="concurrent runs (0: in this process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--set", nargs="*", default=[], metavar="section.key=value")
    p.add_argument("--smoke", action="store_true", help="tiny settings (a test of the script)")
    p.add_argument("--cache", default=str(BENCH / ".cache" / "video_fame"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "video_fame.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    p.add_argument("--checks", action="store_true", help="only the benchmark checks (no runs)")
    p.add_argument(
        "--checks-out", default=str(ROOT / "docs" / "results" / "video_fame_checks.json")
    )
    p.add_argument("--note", default="", help="free-text note stored in settings.notes")
    a = p.parse_args()

    overrides = (SMOKE if a.smoke else []) + list(a.set)
    if a.checks:
        from video_fame_checks import benchmark_checks
        from vislearn.core.utils import write_json

        checks = benchmark_checks(recipe("moco_video", a.epochs, overrides))
        write_json(a.checks_out, {"benchmark": "video_fame_checks", "overrides": overrides,
                                  "checks": checks})  # fmt: skip
        print(checks)
        return
    jobs = make_jobs(a, overrides)
    done = run_jobs(jobs, Path(a.cache), a.jobs, threads_per_job=a.threads,
                    report_only=a.report_only, import_paths=[BENCH],
                    show=("val_probe_top1", "unbiased_probe_top1", "s_per_step"))  # fmt: skip
    write_results(done, a, overrides)


def write_results(runs: list[dict], a: argparse.Namespace, overrides: list[str]) -> None:
    import torch

    rows = aggregate(runs)
    cfg = recipe("moco_video", a.epochs, overrides)
    d, e, m = cfg["data"], cfg["eval"], cfg["model"]
    settings = {
        "data": (
            f"synthetic-motion, {d['motion_design']}: {d['num_train']} train (background bias "
            f"{d['background_bias']}) / {d['num_train']} unbiased probe-train / {d['num_test']} "
            f"test videos, {d['video_frames']} frames (two halves) at {d['image_size']} px, "
            f"{d['num_backgrounds']} photos (random crops), 8 direction classes; synthetic "
            f"seed {d['synthetic_seed']}"
        ),
        "clips": f"{d['frames']} frames, one from each half per training pair (SSL rows); "
        "one random clip for supervised",
        "epochs": a.epochs,
        "seeds": a.seeds,
        "batch_size": d["batch_size"],
        "backbone": f"{m['backbone']} {m['backbone_kwargs']}",
        "probes": f"frozen features averaged over {e['video_clips']} clips, standardised, "
        f"{e['linear_epochs']} epochs SGD lr {e['linear_lr']}; unbiased_probe_top1 trained on "
        "the unbiased training split, biased_probe_top1 on the biased one, both tested on "
        "the test split",
        "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"no GPU; {a.threads} thread(s) per run, {a.jobs} run(s) at a time",
        "recipes": {name: recipe(name, a.epochs, overrides)["model"] for name in ROWS},
        "row_overrides": {name: list(spec[2]) for name, spec in ROWS.items()},
        "overrides": overrides,
        "intervals": "mean over seeds; *_ci95: Student-t 95 % interval (n - 1 dof); *_diff: "
        "paired (same seed) difference against moco_video, with its 95 % t interval",
        "notes": a.note,
    }
    write_json_results(a.out, "video_fame", settings, rows)
    print(f"wrote {a.out}")
    cols = ["unbiased_probe_top1", "biased_probe_top1", "background_var_share", "s_per_step"]
    print("| name | " + " | ".join(cols) + " |")
    for r in rows:
        print(f"| {r['name']} | " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
