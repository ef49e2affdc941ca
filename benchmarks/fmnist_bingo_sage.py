"""Fashion-MNIST benchmark of the two methods driven by a frozen pretrained network:
BINGO (distillation from a larger MoCo v2 teacher) and SaGe (BYOL + reconstruction judged by a
frozen evaluator), with their baselines and ablations -> docs/results/fmnist_bingo_sage.json.

Protocol of ``fmnist_ssl.py`` (full Fashion-MNIST, the ``configs/fmnist_ssl`` recipes, the
students' 4 epochs, offline kNN and linear evaluation). The student baselines, MoCo v2 and BYOL
from scratch, are ``fmnist_ssl.py``'s own runs (shared cache: reused when present).

* **teacher**: MoCo v2 on resnet18 (small_ds stem, width 16), 8 epochs
  (``moco_v2_resnet18_teacher.yaml``), evaluated like the students. BINGO's recipes
  (``bingo.yaml``, ``bingo_paper_loss.yaml``) distil it into the students' resnet_tiny.
* **evaluator**: SaGe's frozen label-free network is the BYOL baseline run itself (seed 0, its
  ``last.ckpt`` with the projector): the paper judges reconstructions with a BYOL network, and
  this way SaGe gets no information from another method. ``sage.yaml`` (released loss weights),
  ``sage_pixel_only.yaml`` (BYOL + pixel MSE) and ``sage_evaluator_only.yaml`` (BYOL +
  evaluator losses).

    python benchmarks/fmnist_bingo_sage.py --jobs 2
    python benchmarks/fmnist_bingo_sage.py --report-only

Jobs wait for what they need (BINGO for the teacher, SaGe for the BYOL run); finished runs are
cached (one JSON each), so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fmnist_ssl import aggregate, run_pending  # noqa: E402

SSL_CACHE = ROOT / "benchmarks" / ".cache" / "fmnist_ssl"
TEACHER = "moco_v2_resnet18_teacher"
# recipe -> (what it needs, the model field that receives it)
STUDENTS = {
    "bingo": ("teacher", "teacher"),
    "bingo_paper_loss": ("teacher", "teacher"),
    "sage": ("evaluator", "evaluator"),
    "sage_pixel_only": ("evaluator", "evaluator"),
    "sage_evaluator_only": ("evaluator", "evaluator"),
}
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


def checkpoint_of(cache: Path, key: str) -> Path:
    return cache / "runs" / key / "checkpoints" / "last.ckpt"


def run_recipe_job(job: dict) -> dict:
    """Train one recipe (with its frozen network's path filled in) and evaluate it offline."""
    import lightning as L
    import torch

    from vislearn.core.config import load_config
    from vislearn.engine.trainer import Throughput, build_trainer
    from vislearn.tasks.ssl.run import build_datamodule, build_from_config, evaluate

    torch.set_num_threads(job["threads"])
    cfg = load_config(
        ROOT / "configs" / "fmnist_ssl" / f"{job['method']}.yaml",
        seed=job["seed"],
        trainer={"progress": False},
        model=job.get("model", {}),
    )
    L.seed_everything(job["seed"], verbose=False)
    dm = build_datamodule(cfg)
    model = build_from_config(cfg, dm)
    tp = Throughput()
    t0 = time.perf_counter()
    trainer = build_trainer(
        Path(job["cache"]) / "runs" / job["key"], callbacks=[tp], **cfg["trainer"]
    )
    trainer.fit(model, datamodule=dm)
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
        **job,
        **res,
        "epochs": cfg["trainer"]["max_epochs"],
        "images_per_s": tp.images_per_s,
        "train_seconds": tp.seconds,
        "wall_seconds": time.perf_counter() - t0,
    }
    metrics = trainer.callback_metrics
    for k in ("train/bag_purity", "train/loss_pix", "train/loss_feat", "train/loss_proj"):
        if k in metrics:
            out[k.removeprefix("train/")] = float(metrics[k])
    return out


def run_graph(jobs: list[dict], cache: Path, n_jobs: int, ready: dict[str, Path]) -> list[dict]:
    """Run ``jobs`` (not cached yet) ``n_jobs`` at a time; a job with ``needs`` starts once
    that checkpoint exists (``ready[needs]``, filled as the teacher finishes)."""
    from vislearn.core.utils import write_json

    done, waiting = [], []
    for j in jobs:
        f = cache / f"{j['key']}.json"
        (done.append(json.loads(f.read_text())) if f.exists() else waiting.append(j))
    print(f"{len(done)} cached, {len(waiting)} to run", flush=True)
    with ProcessPoolExecutor(
        n_jobs, mp_context=get_context("spawn"), max_tasks_per_child=1
    ) as pool:
        running = {}

        def launch() -> None:
            for j in list(waiting):
                if j.get("needs") and j["needs"] not in ready:
                    continue
                if j.get("needs"):
                    j["model"] = {j["field"]: str(ready[j["needs"]])}
                waiting.remove(j)
                running[pool.submit(run_recipe_job, j)] = j

        launch()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                j = running.pop(fut)
                row = fut.result()
                write_json(cache / f"{j['key']}.json", row)
                print(json.dumps({k: row.get(k) for k in ("key", "knn_top1", "linear_top1")}))
                done.append(row)
                if j["method"] == TEACHER:
                    ready["teacher"] = checkpoint_of(cache, j["key"])
            launch()
    if waiting:
        raise RuntimeError(f"jobs never became ready: {[j['key'] for j in waiting]}")
    return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--jobs", type=int, default=2, help="concurrent runs (threads each = 1)")
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache" / "fmnist_bingo_sage"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_bingo_sage.json"))
    p.add_argument("--report-only", action="store_true", help="write results from the cache")
    p.add_argument("--only", nargs="+", help="run only these recipes (e.g. bingo sage)")
    a = p.parse_args()
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)

    # the students' baselines: fmnist_ssl's runs (their cache), run here if missing
    base_jobs = [
        {"impl": "vislearn", "method": m, "seed": s}
        for s in a.baseline_seeds
        for m in ("moco_v2", "byol")
    ]
    baselines = run_pending(
        base_jobs, 4, "fmnist", a.baseline_seeds, SSL_CACHE, a.jobs, a.report_only
    )
    baselines = [
        r for r in baselines if r["impl"] == "vislearn" and r["method"] in ("moco_v2", "byol")
    ]
    ready = {"evaluator": checkpoint_of(SSL_CACHE, f"vislearn_byol_s{a.seed}_e4")}
    teacher_key = f"teacher_{TEACHER}_s{a.seed}"
    if checkpoint_of(cache, teacher_key).exists() and (cache / f"{teacher_key}.json").exists():
        ready["teacher"] = checkpoint_of(cache, teacher_key)
    jobs = [{"method": TEACHER, "key": teacher_key}]
    for recipe, (needs, field) in STUDENTS.items():
        jobs.append(
            {"method": recipe, "key": f"{recipe}_s{a.seed}", "needs": needs, "field": field}
        )
    if a.only:
        jobs = [j for j in jobs if j["method"] in a.only]
    for j in jobs:
        j.update(seed=a.seed, threads=1 if a.jobs > 1 else 2, cache=str(cache))
    runs = [] if a.report_only else run_graph(jobs, cache, a.jobs, ready)
    if a.report_only:
        runs = [
            json.loads((cache / f"{j['key']}.json").read_text())
            for j in jobs
            if (cache / f"{j['key']}.json").exists()
        ]
    write_results(baselines + runs, a, ready)


def write_results(runs: list[dict], a: argparse.Namespace, ready: dict[str, Path]) -> None:
    import torch

    from vislearn.core.config import load_config
    from vislearn.core.utils import write_json

    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["method"], []).append(r)
    rows = aggregate(groups)
    for row in rows:
        first = groups[row["name"]][0]
        for k in ("epochs", "bag_purity", "loss_pix", "loss_feat", "loss_proj"):
            if k in first:
                row[k] = round(first[k], 4) if isinstance(first[k], float) else first[k]
        row["role"] = (
            "teacher"
            if row["name"] == TEACHER
            else "baseline"
            if row["name"] in ("moco_v2", "byol")
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
        f"{a.seed} (fmnist_ssl cache, its last.ckpt with the EMA projector), BN in eval mode",
        "seeds": {"students": [a.seed], "baselines": a.baseline_seeds},
        "knn": "k=200, T=0.07, cosine, bank = 60k train features, query = 10k test",
        "linear": "100 epochs SGD on frozen standardised features, lr 0.1 cosine",
        "images_per_s": "training-loop wall clock under varying load (two to five runs sharing "
        "the 2 cores): not comparable across rows",
        "hardware": f"{platform.processor() or platform.machine()}, 2 CPU cores, torch "
        f"{torch.__version__}, no GPU",
        "recipes": recipes,
    }
    write_json(a.out, {"benchmark": "fmnist_bingo_sage", "settings": settings, "rows": rows})
    grid = Path(a.cache) / "runs" / f"sage_s{a.seed}" / "reconstructions"
    if grid.is_dir() and (pngs := sorted(grid.glob("*.png"))):
        shutil.copyfile(pngs[-1], Path(a.out).with_name("sage_reconstructions.png"))
    print(f"wrote {a.out}")
    for r in rows:
        cells = [r["name"], r["role"], *(r.get(k) for k in ("knn_top1", "linear_top1"))]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
