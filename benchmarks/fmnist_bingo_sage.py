"""Fashion-MNIST benchmark of the two methods driven by a frozen pretrained network:
BINGO (distillation from a larger MoCo v2 teacher) and SaGe (BYOL + reconstruction judged by a
frozen evaluator), with their baselines and ablations -> docs/results/fmnist_bingo_sage.json.

Protocol of ``fmnist_ssl.py`` (full Fashion-MNIST, the ``configs/fmnist_ssl`` recipes, the
students' 4 epochs, offline kNN and linear evaluation). The student baselines, MoCo v2 and BYOL
from scratch, are ``fmnist_ssl.py``'s own jobs (same job function ``fmnist_ssl:run_job``, same
resolved config, hence the same key in the shared cache: reused when present).

* **teacher**: MoCo v2 on resnet18 (small_ds stem, width 16), 8 epochs
  (``moco_v2_resnet18_teacher.yaml``), evaluated like the students. BINGO's recipes
  (``bingo.yaml``, ``bingo_paper_loss.yaml``) distil it into the students' resnet_tiny.
* **evaluator**: SaGe's frozen label-free network is the BYOL baseline run itself (its
  ``last.ckpt`` with the projector): the paper judges reconstructions with a BYOL network, and
  this way SaGe gets no information from another method. ``sage.yaml`` (released loss weights),
  ``sage_pixel_only.yaml`` (BYOL + pixel MSE) and ``sage_evaluator_only.yaml`` (BYOL +
  evaluator losses).
* **seeds**: the teacher and the evaluator are trained once (``--frozen-seed``, default 0) and
  shared by every student seed, as a user distils from the one network they have; seeds vary the
  students and their from-scratch baselines. ``bingo`` and ``sage`` run at ``--seeds``, the
  ablations at ``--ablation-seeds``.

    python benchmarks/fmnist_bingo_sage.py --jobs 2
    python benchmarks/fmnist_bingo_sage.py --report-only

Jobs run on :func:`vislearn.bench.run_jobs` in stages (the baselines; the teacher and the main
SaGe rows; the main BINGO rows; then the ablations): a student's config holds the key of the job
whose checkpoint it uses (a changed teacher reruns its students), the checkpoint path is passed
unhashed. Finished runs are cached by config hash, so an interrupted benchmark resumes. Rows:
mean, per-seed values, 95 % t interval and, for the students, the paired (same seed) difference
against their from-scratch baseline (BINGO vs moco_v2, SaGe vs byol).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import time
from pathlib import Path

from vislearn.bench import Job, aggregate, run_jobs
from vislearn.bench import write_results as write_json_results

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SSL_CACHE = BENCH / ".cache" / "fmnist_ssl"
METRICS = ("knn_top1", "linear_top1", "images_per_s")
FN = "fmnist_bingo_sage:run_recipe_job"
BASELINE_EPOCHS = 4  # fmnist_ssl.py's default, so the baselines are its runs
BASELINE_OF = {"bingo": "moco_v2", "sage": "byol"}  # student family -> from-scratch baseline
TEACHER = "moco_v2_resnet18_teacher"
# recipe -> (what it needs, the model field that receives it)
STUDENTS = {
    "bingo": ("teacher", "teacher"),
    "bingo_paper_loss": ("teacher", "teacher"),
    "sage": ("evaluator", "evaluator"),
    "sage_pixel_only": ("evaluator", "evaluator"),
    "sage_evaluator_only": ("evaluator", "evaluator"),
}
MAIN = ("bingo", "sage")  # the rows with the targets; the others are ablations
ORDER = (
    TEACHER,
    "moco_v2",
    "bingo",
    "bingo_paper_loss",
    "byol",
    "sage",
    "sage_pixel_only",
    "sage_evaluator_only",
)


def checkpoint_of(job: Job, cache: Path) -> Path:
    return job.run_dir(cache) / "checkpoints" / "last.ckpt"


def _recipe(name: str, **updates) -> dict:
    from vislearn.core.config import load_config

    cfg = load_config(ROOT / "configs" / "fmnist_ssl" / f"{name}.yaml", **updates)
    cfg.pop("seed")  # the job's
    cfg.pop("out")  # the job's run directory
    return cfg


def baseline_job(method: str, seed: int) -> Job:
    """fmnist_ssl.py's job for ``vislearn/<method>`` at 4 epochs (same config as its
    ``job_config``, so the key matches its cache)."""
    cfg = _recipe(
        method,
        trainer={
            "max_epochs": BASELINE_EPOCHS,
            "check_val_every_n_epoch": BASELINE_EPOCHS,
            "progress": False,
        },
        data={"dataset": "fmnist"},
        model={},
    )
    config = {"impl": "vislearn", "method": method, "recipe": cfg}
    return Job(f"vislearn/{method}", seed, config, "fmnist_ssl:run_job")


def make_jobs(a: argparse.Namespace, cache: Path) -> list[list[tuple[Job, Path]]]:
    """The job table in stages of (job, cache dir): the baselines (fmnist_ssl's cache), the
    teacher with the main SaGe rows, the main BINGO rows, then the ablations. The teacher and the
    evaluator (the BYOL baseline) are those of --frozen-seed, shared by every student seed."""
    seeds = sorted({*a.seeds, *a.ablation_seeds, a.frozen_seed})
    base = [baseline_job(m, s) for s in seeds for m in BASELINE_OF.values()]
    evaluator = baseline_job("byol", a.frozen_seed)
    teacher = Job(
        TEACHER, a.frozen_seed, {"recipe": _recipe(TEACHER, trainer={"progress": False})}, FN
    )
    needed = {"teacher": (teacher, cache), "evaluator": (evaluator, a.ssl_cache)}
    main, ablations = [], []
    for recipe, (needs, field) in STUDENTS.items():
        job, where = needed[needs]
        config = {"recipe": _recipe(recipe, trainer={"progress": False}), "field": field,
                  "needs": {"name": job.name, "key": job.key}}  # fmt: skip
        resources = {"checkpoint": str(checkpoint_of(job, where))}
        is_main = recipe in MAIN
        for s in a.seeds if is_main else a.ablation_seeds:
            (main if is_main else ablations).append(Job(recipe, s, config, FN, resources=resources))
    if a.only:
        main, ablations = ([j for j in js if j.name in a.only] for js in (main, ablations))
    sage = [j for j in main if j.config["field"] == "evaluator"]
    bingo = [j for j in main if j.config["field"] == "teacher"]
    distils = any(j.config["field"] == "teacher" for j in (*main, *ablations))
    return [
        [(j, a.ssl_cache) for j in base],
        [(j, cache) for j in ([teacher] if distils else []) + sage],
        [(j, cache) for j in bingo],
        [(j, cache) for j in ablations],
    ]


def run_recipe_job(config: dict, seed: int, ctx: dict) -> dict:
    """Train one recipe (with its frozen network's path filled in) and evaluate it offline;
    seed -> datamodule -> method -> trainer -> fit is :func:`vislearn.tasks.ssl.run.pretrain`."""
    from vislearn.tasks.ssl.run import evaluate, pretrain

    cfg = {**config["recipe"], "seed": seed, "out": ctx["run_dir"]}
    if "field" in config:
        cfg["model"] = {**cfg["model"], config["field"]: ctx["resources"]["checkpoint"]}
    t0 = time.perf_counter()
    model, _, stats = pretrain(cfg)
    e = cfg["eval"]
    res = evaluate(
        model.backbone,
        "fmnist",
        knn_k=e["knn_k"],
        knn_t=e["knn_t"],
        linear_epochs=e["linear_epochs"],
        linear_lr=e["linear_lr"],
        device="cpu",
    )
    out = {
        **res,
        "epochs": cfg["trainer"]["max_epochs"],
        **stats,
        "wall_seconds": time.perf_counter() - t0,
    }
    metrics = model.trainer.callback_metrics
    for k in ("train/bag_purity", "train/loss_pix", "train/loss_feat", "train/loss_proj"):
        if k in metrics:
            out[k.removeprefix("train/")] = float(metrics[k])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="bingo and sage")
    p.add_argument("--ablation-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--frozen-seed", type=int, default=0, help="the teacher's and evaluator's")
    p.add_argument("--jobs", type=int, default=2, help="concurrent runs (threads each = 1)")
    p.add_argument("--cache", type=Path, default=BENCH / ".cache" / "fmnist_bingo_sage")
    p.add_argument("--ssl-cache", type=Path, default=SSL_CACHE, help="fmnist_ssl.py's cache")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_bingo_sage.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    p.add_argument("--only", nargs="+", help="run only these recipes (e.g. bingo sage)")
    a = p.parse_args()
    runs, sage_dirs = [], []
    for stage in make_jobs(a, a.cache):
        if not stage:
            continue
        where = stage[0][1]
        runs += run_jobs([j for j, _ in stage], where, a.jobs, report_only=a.report_only,
                         import_paths=[BENCH], show=METRICS)  # fmt: skip
        sage_dirs += [j.run_dir(c) for j, c in stage if j.name == "sage"]
    write_results(runs, a, sage_dirs)


def write_results(runs: list[dict], a: argparse.Namespace, sage_dirs: list[Path]) -> None:
    import torch

    from vislearn.core.config import load_config

    runs = [{**r, "name": r["name"].removeprefix("vislearn/")} for r in runs]
    rows = []
    for family, base in BASELINE_OF.items():
        group = [r for r in runs if r["name"] == base or r["name"].startswith(family)]
        rows += aggregate(group, METRICS, baseline=base)
    rows += aggregate([r for r in runs if r["name"] == TEACHER], METRICS)
    for row in rows:
        first = next(r["metrics"] for r in runs if r["name"] == row["name"])
        for k in ("epochs", "bag_purity", "loss_pix", "loss_feat", "loss_proj"):
            if k in first:
                row[k] = round(first[k], 4) if isinstance(first[k], float) else first[k]
        if row["name"] in BASELINE_OF.values():
            row["epochs"] = BASELINE_EPOCHS
        row["role"] = (
            "teacher"
            if row["name"] == TEACHER
            else "baseline"
            if row["name"] in BASELINE_OF.values()
            else "student"
        )
    rows.sort(key=lambda r: ORDER.index(r["name"]) if r["name"] in ORDER else len(ORDER))
    recipes = {
        n: load_config(ROOT / "configs" / "fmnist_ssl" / f"{n}.yaml")["model"] for n in ORDER
    }
    settings = {
        "data": "Fashion-MNIST, train 60k / test 10k, 28x28 grayscale",
        "students": "resnet_tiny (stem small_ds, width 16; 77k params, 64-d features), 4 epochs, "
        "SGD momentum 0.9 lr 0.06 wd 5e-4 cosine, batch 256 (the configs/fmnist_ssl recipes)",
        "teacher": "MoCo v2, resnet18 (stem small_ds, width 16; 0.70 M params, 128-d), 8 epochs, "
        "frozen, BatchNorm in eval mode",
        "evaluator": "SaGe's frozen evaluator: the BYOL baseline run of seed "
        f"{a.frozen_seed} (fmnist_ssl cache, its last.ckpt with the EMA projector), BN in eval "
        "mode",
        "seeds": {
            "students": a.seeds,
            "ablations": a.ablation_seeds,
            "teacher_and_evaluator": a.frozen_seed,
        },
        "intervals": "mean over seeds; *_ci95: Student-t 95 % interval (n - 1 dof); *_diff: "
        "paired (same seed) difference of a BINGO row against moco_v2, of a SaGe row against "
        "byol, with its 95 % t interval",
        "knn": "k=200, T=0.07, cosine, bank = 60k train features, query = 10k test",
        "linear": "100 epochs SGD on frozen standardised features, lr 0.1 cosine",
        "images_per_s": "training-loop wall clock under varying load (two to five runs sharing "
        "the 2 cores): not comparable across rows",
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, torch "
        f"{torch.__version__}, no GPU",
        "recipes": recipes,
    }
    write_json_results(a.out, "fmnist_bingo_sage", settings, rows)
    grids = [d / "reconstructions" for d in sage_dirs[:1]]  # the first student seed's
    if grids and grids[0].is_dir() and (pngs := sorted(grids[0].glob("*.png"))):
        shutil.copyfile(pngs[-1], Path(a.out).with_name("sage_reconstructions.png"))
    print(f"wrote {a.out}")
    for r in rows:
        cells = [r["name"], r["role"], *(r.get(k) for k in ("knn_top1", "linear_top1"))]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
