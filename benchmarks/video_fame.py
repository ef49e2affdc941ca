"""Synthetic motion benchmark: video MoCo vs video MoCo + FAME at equal epochs, with supervised
and random-init reference rows -> docs/results/video_fame.json.

Data: the background-biased synthetic motion set (configs/video_synth/*.yaml: Fashion-MNIST
sprites moving over photos, 8 motion classes, 2000 train videos of which 80 % take a
background of their class's subset, 800 unbiased test videos; 16 frames at 32 px, 8-frame
clips). Rows (names as in issue 9):

* ``moco_video``: ``vislearn pretrain moco_video`` (configs/video_synth/moco_video.yaml);
* ``moco_video_fame``: the ``fame`` method, the same recipe plus FAME on the first clip
  (the two runs draw the same crops and jitters step for step);
* ``supervised``: ``supervised_video``, cross-entropy on the biased train labels;
* ``random_init``: the untrained backbone.

Each row is evaluated on frozen features (linear probe on 5 uniform clips per video:
``motion_top1`` on the unbiased test split; ``background_probe_top1``: the same probe
predicting the background identity, chance 1/16; clip retrieval ``retrieval_r1/5/10``, test
queries vs train gallery) and by fine-tuning (``finetune_top1``). The runs of a seed's
moco_video and moco_video_fame execute concurrently (one thread each), so their seconds per
step compare directly (``step_time_ratio_vs_moco_video``).

    python benchmarks/video_fame.py --epochs 16 --seeds 0 --jobs 2

Estimated wall time from step times measured on the 2-core machine under load (one thread
per run, 16 epochs): per seed moco_video ~27 min, moco_video_fame ~28 min, supervised ~13 min,
random_init ~5 min (training, online kNN and ~4.5 min of evaluation each), so ~40 min per seed
with --jobs 2 on otherwise idle cores, longer when other jobs share them.

A smoke run (about a minute, writes elsewhere):

    python benchmarks/video_fame.py --epochs 1 --seeds 0 --jobs 1 --smoke \\
        --out /tmp/video_fame.json --cache /tmp/video_fame_cache

``--set section.key=value`` overrides every recipe (e.g. ``data.background_bias=0.9``); runs
with different overrides are cached apart: jobs run on :func:`vislearn.bench.run_jobs`, which
caches each finished run under --cache by the hash of its resolved recipe and seed, so an
interrupted benchmark resumes and a changed recipe runs again. Rows: mean, per-seed values,
95 % t interval and the paired (same seed) difference against ``moco_video``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from vislearn.bench import Job, run_jobs
from vislearn.bench import aggregate as aggregate_rows
from vislearn.bench import write_results as write_json_results

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

#: result row name -> (vislearn method, recipe under configs/video_synth/)
ROWS: dict[str, tuple[str, str]] = {
    "moco_video": ("moco_video", "moco_video.yaml"),
    "moco_video_fame": ("fame", "fame.yaml"),
    "supervised": ("supervised_video", "supervised_video.yaml"),
    "random_init": ("moco_video", "moco_video.yaml"),  # its backbone, data and eval settings
}
METRICS = (
    "motion_top1",
    "finetune_top1",
    "retrieval_r1",
    "retrieval_r5",
    "retrieval_r10",
    "background_probe_top1",
    "motion_top1_unbiased_probe",
    "background_var_share",
    "motion_var_share",
    "online_knn_top1",
    "s_per_step",
    "train_seconds",
    "wall_seconds",
)
#: the override of the unbiased probe (--unbiased-probe)
UNBIASED = "data.background_bias=0"
#: tiny settings of --smoke (seconds per run)
SMOKE = [
    "data.num_train=64",
    "data.num_test=32",
    "data.batch_size=16",
    "data.knn_bank_size=64",
    "model.backbone_kwargs.width=4",
    "eval.linear_epochs=5",
    "eval.finetune_epochs=1",
    "eval.video_clips=2",
]


def recipe(name: str, epochs: int, overrides: list[str]) -> dict:
    """Row ``name``'s resolved recipe (``seed`` and ``out`` are the job's)."""
    from vislearn.core.config import load_config

    method, file = ROWS[name]
    cfg = load_config(
        ROOT / "configs" / "video_synth" / file,
        overrides,
        trainer={"max_epochs": epochs, "check_val_every_n_epoch": epochs, "progress": False},
    )
    cfg.pop("seed")
    cfg.pop("out")
    return cfg


def make_jobs(a: argparse.Namespace, overrides: list[str]) -> list[Job]:
    """The job table: every --rows row at every seed (moco_video and moco_video_fame
    adjacent: they run as a concurrent pair)."""
    return [
        Job(
            name,
            seed,
            {"row": name, "overrides": overrides, "recipe": recipe(name, a.epochs, overrides)},
            "video_fame:run_job",
        )  # fmt: skip
        for seed in a.seeds
        for name in a.rows
    ]


def run_job(config: dict, seed: int, ctx: dict) -> dict:
    """Train one (row, seed) and evaluate it; runs in a worker process."""
    import lightning as L

    from vislearn.engine.trainer import Throughput, build_trainer
    from vislearn.models import create_backbone
    from vislearn.tasks.ssl.run import (
        VIDEO_PROTOCOLS,
        build_datamodule,
        build_from_config,
        evaluate_video,
    )

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
            "clips_per_s": tp.images_per_s,
            "train_seconds": tp.seconds,
            "steps": trainer.global_step,
            "s_per_step": tp.seconds / max(1, trainer.global_step),
        }
        if "val/knn_top1" in metrics:
            stats["online_knn_top1"] = 100 * float(metrics["val/knn_top1"])
    res = evaluate_video(
        backbone, cfg, VIDEO_PROTOCOLS, crop_size=m.get("image_size"), device="cpu"
    )
    return {**res, **stats, "wall_seconds": time.perf_counter() - t0}


def unbiased_probe(run: dict, run_dir: Path) -> dict:
    """``motion_top1_unbiased_probe``: the frozen linear probe of ``run``'s backbone trained on
    an *unbiased* training split (``data.background_bias=0``; same test split), i.e. how much
    motion the features hold when the probe cannot lean on the background. Cached next to the
    run's result."""
    import json

    import lightning as L
    import torch

    from vislearn.core.utils import write_json
    from vislearn.models import create_backbone
    from vislearn.tasks.ssl.run import build_datamodule, build_from_config, evaluate_video

    path = run_dir.with_name(f"{run['key'][:16]}_unbiased_probe.json")
    if path.is_file():
        return json.loads(path.read_text())
    c = run["config"]
    cfg = {**c["recipe"], "seed": run["seed"]}
    m = cfg["model"]
    if c["row"] == "random_init":
        L.seed_everything(run["seed"], verbose=False)  # the backbone run_job scored
        chans = cfg["data"]["channels"] or 3
        backbone = create_backbone(m["backbone"], in_chans=chans, **m["backbone_kwargs"])
    else:
        model = build_from_config(cfg, build_datamodule(cfg))
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
        backbone = model.backbone
    epochs = cfg["trainer"]["max_epochs"]
    unbiased = {**recipe(c["row"], epochs, [*c["overrides"], UNBIASED]), "seed": run["seed"]}
    res = evaluate_video(backbone.eval(), unbiased, ("linear",), m.get("image_size"), "cpu")
    out = {"motion_top1_unbiased_probe": res["motion_top1"]}
    write_json(path, out)
    return out


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per name (order of :data:`ROWS`): mean, per-seed values, 95 % interval and
    the paired difference against ``moco_video``."""
    runs = sorted(runs, key=lambda r: list(ROWS).index(r["name"]))
    rows = aggregate_rows(runs, METRICS, baseline="moco_video", ndigits=3)
    for row in rows:
        row["method"] = ROWS[row["name"]][0]
    base = {r["seed"]: r["metrics"].get("s_per_step") for r in runs if r["name"] == "moco_video"}
    for row in rows:  # same-seed pairs ran concurrently: their step times compare directly
        ratios = [
            r["metrics"]["s_per_step"] / base[r["seed"]]
            for r in runs
            if r["name"] == row["name"] and r["metrics"].get("s_per_step") and base.get(r["seed"])
        ]
        if ratios and row["name"] != "moco_video":
            row["step_time_ratio_vs_moco_video"] = round(statistics.mean(ratios), 3)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--jobs", type=int, default=2, help="concurrent runs (threads each = 1)")
    p.add_argument("--set", nargs="*", default=[], metavar="section.key=value")
    p.add_argument("--smoke", action="store_true", help="tiny settings (a test of the script)")
    p.add_argument("--cache", default=str(BENCH / ".cache" / "video_fame"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "video_fame.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    p.add_argument("--note", default="", help="free-text note stored in settings.notes")
    p.add_argument(
        "--unbiased-probe",
        action="store_true",
        help="also probe every run's frozen features with a probe trained on an unbiased "
        "training split (motion_top1_unbiased_probe; ~2 min per run)",
    )
    a = p.parse_args()

    overrides = (SMOKE if a.smoke else []) + list(a.set)
    cache = Path(a.cache)
    jobs = make_jobs(a, overrides)
    done = run_jobs(jobs, cache, a.jobs, report_only=a.report_only, import_paths=[BENCH],
                    show=("motion_top1", "finetune_top1", "s_per_step"))  # fmt: skip
    if a.unbiased_probe:
        import torch

        torch.set_num_threads(2 if a.jobs == 1 else 1)
        dirs = {j.key: j.run_dir(cache) for j in jobs}
        for r in done:
            r["metrics"].update(unbiased_probe(r, dirs[r["key"]]))
    write_results(done, a, overrides)


def write_results(runs: list[dict], a: argparse.Namespace, overrides: list[str]) -> None:
    import torch

    rows = aggregate(runs)
    cfg = recipe("moco_video", a.epochs, overrides)
    d, e, m = cfg["data"], cfg["eval"], cfg["model"]
    settings = {
        "data": (
            f"synthetic-motion: {d['num_train']} train / {d['num_test']} test videos, "
            f"{d['video_frames']} frames at {d['image_size']} px, {d['channels']} channels, "
            f"8 motion classes (4 directions, 2 rotations, 2 scalings), Fashion-MNIST sprites "
            f"over {d['num_backgrounds']} backgrounds; train background bias "
            f"{d['background_bias']}, test unbiased; synthetic seed {d['synthetic_seed']}"
        ),
        "clips": f"{d['frames']} frames, stride {d['frame_stride']}; two random clips per "
        "video for the SSL rows, one for supervised",
        "epochs": a.epochs,
        "seeds": a.seeds,
        "batch_size": d["batch_size"],
        "backbone": f"{m['backbone']} {m['backbone_kwargs']}",
        "linear_probe": f"frozen features averaged over {e['video_clips']} uniform clips, "
        f"standardised, {e['linear_epochs']} epochs SGD lr {e['linear_lr']} cosine, "
        "train -> test split (motion_top1; background_probe_top1 with the background id)",
        "finetune": f"{e['finetune_epochs']} epochs, SGD lr {e['finetune_lr']} cosine, batch "
        f"{e['finetune_batch_size']}, one random clip, crop 0.2-1 + colour jitter (no flip), "
        f"test logits averaged over {e['video_clips']} uniform clips",
        "unbiased_probe": "motion_top1_unbiased_probe: the same linear probe trained on a "
        "training split generated with background_bias=0 (same test split)"
        if a.unbiased_probe
        else "not run",
        "retrieval": f"test queries vs train gallery, {e['video_clips']} clips averaged, "
        "gallery-mean centred, L2-normalised, cosine; R@k in %",
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, torch "
        f"{torch.__version__}, no GPU; one thread per run, {a.jobs} runs at a time",
        "recipes": {
            name: recipe(name, a.epochs, overrides)["model"]
            for name in ROWS
            if name != "random_init"
        },
        "overrides": overrides,
        "intervals": "mean over seeds; *_ci95: Student-t 95 % interval (n - 1 dof); *_diff: "
        "paired (same seed) difference against moco_video, with its 95 % t interval",
        "notes": a.note,
    }
    write_json_results(a.out, "video_fame", settings, rows)
    print(f"wrote {a.out}")
    cols = ["motion_top1", "finetune_top1", "retrieval_r1", "retrieval_r5"]
    cols += ["background_probe_top1", "s_per_step"]
    print("| name | " + " | ".join(cols) + " |")
    for r in rows:
        print(f"| {r['name']} | " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
