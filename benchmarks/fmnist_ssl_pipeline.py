"""vislearn against lightly's documented pipeline, end to end: MoCo v2, SimCLR and BYOL on
resnet_tiny (stem small_ds, width 16; configs/fmnist_ssl/<method>.yaml).

* ``vislearn/<method>``: vislearn's data module (uint8 batches) and its batched on-device
  augmentation, the method of the recipe.
* ``lightly_pipeline/<method>``: what a lightly user writes: a torchvision-style
  Fashion-MNIST data set of PIL images, lightly's ``MoCoV2Transform`` / ``SimCLRTransform`` /
  ``BYOLTransform`` (input size 28) applied per image in DataLoader workers, then lightly's
  heads, losses and momentum update (benchmarks/lightly_methods.py) on the same backbone,
  optimiser, schedule and online probe, without vislearn's channels-last step.

Transform settings follow our recipes as far as lightly's API allows: the same crop scales,
flip, colour-jitter strengths and probabilities, grayscale p 0.2, solarisation (BYOL view 2),
and Gaussian blur off (vislearn switches blur off for views <= 64 px, as lightly's own CIFAR
benchmarks do: ``gaussian_blur=0``). Fashion-MNIST is 1-channel: the PIL images stay mode
"L" (lightly's transforms accept it; saturation, hue and grayscale are no-ops on it, as in
vislearn) and ``normalize`` gets Fashion-MNIST's mean/std, so both sides feed the same
1-channel backbone. Differences that remain: torchvision draws the jitter order at random
per image (vislearn: fixed order) and crops with PIL (vislearn: one ``grid_sample``).

Two modes:

* ``speed`` (default): images/s of the WHOLE training loop (loading + augmentation + step),
  implementations alternating in one process, median of per-round ratios -> the ``rows`` of
  docs/results/fmnist_ssl_speed.json (``speed_ratio_vs_lightly_pipeline``); the
  heads-and-losses table of fmnist_ssl_speed.py stays in its ``heads_and_losses`` section.
* ``accuracy``: a job table on :mod:`vislearn.bench` (kNN / linear top-1 at equal epochs,
  seeds, 95 % intervals, paired differences) -> docs/results/fmnist_ssl_pipeline.json;
  ``--contiguous`` adds ``vislearn_contiguous/<method>`` rows (``channels_last=false``) to
  check that the channels-last step trains to the same accuracy.

    python benchmarks/fmnist_ssl_pipeline.py speed --rounds 5 --batches 20 --workers 2
    python benchmarks/fmnist_ssl_pipeline.py accuracy --epochs 4 --seeds 0 1 2 --jobs 2 --contiguous
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from vislearn.bench import Job, aggregate, render_table, run_jobs
from vislearn.bench import write_results as write_results_json

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
METHODS = ("moco_v2", "simclr", "byol")
METRICS = ("knn_top1", "linear_top1", "images_per_s")
GRAY = {"mean": [0.2860], "std": [0.3530]}  # Fashion-MNIST train statistics (vislearn's)


def lightly_transform(method: str, size: int = 28, normalize: dict | None = None):
    """lightly's transform of ``method`` with vislearn's recipe settings (module docstring);
    ``normalize``: Fashion-MNIST's statistics by default (lightly's default is ImageNet's)."""
    from lightly.transforms import BYOLTransform, MoCoV2Transform, SimCLRTransform
    from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform

    norm = normalize or GRAY
    if method == "moco_v2":  # crop 0.2-1, jitter 0.4/0.4/0.4/0.1 p 0.8, gray 0.2
        return MoCoV2Transform(input_size=size, gaussian_blur=0.0, normalize=norm)
    if method == "simclr":  # crop 0.08-1, jitter 0.8/0.8/0.8/0.2 p 0.8, gray 0.2
        return SimCLRTransform(input_size=size, gaussian_blur=0.0, normalize=norm)
    if method == "byol":  # crop 0.08-1, jitter 0.4/0.4/0.2/0.1, view 2 solarise p 0.2
        return BYOLTransform(
            BYOLView1Transform(input_size=size, gaussian_blur=0.0, normalize=norm),
            BYOLView2Transform(input_size=size, gaussian_blur=0.0, normalize=norm),
        )
    raise ValueError(f"no lightly transform for {method!r}")


class PilFashionMNIST:
    """torchvision's ``FashionMNIST`` / ``CIFAR10`` item logic: a PIL image ("L" from
    ``[N, H, W]``, "RGB" from ``[N, H, W, 3]`` uint8 arrays) through ``transform``."""

    def __init__(self, images, labels, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def lightly_loader(method: str, dataset: str, batch_size: int, workers: int, seed: int):
    """A shuffled DataLoader of (list of views, labels), the transform run in ``workers``."""
    import torch
    from torch.utils.data import DataLoader

    from vislearn.data.fmnist import load_embedded_fmnist, load_fashion_mnist

    images, labels = load_embedded_fmnist("train") if dataset == "fmnist-mini" else \
        load_fashion_mnist("train")  # fmt: skip
    ds = PilFashionMNIST(images, labels, lightly_transform(method))
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, generator=g,
                      num_workers=workers, persistent_workers=workers > 0)  # fmt: skip


class PassViews:
    """Stands in for vislearn's augmentation: the views come augmented from the loader."""

    def __init__(self) -> None:
        import torch

        self.generator = torch.Generator()

    def __call__(self, views):
        return list(views)


def lightly_model(method: str, model_cfg: dict, seed: int, in_chans: int = 1, size: int = 28):
    """lightly's method (heads, loss, EMA) on vislearn's base, fed pre-augmented views."""
    from lightly_methods import LIGHTLY_METHODS  # the peer module next to this script

    kw = {"in_chans": in_chans, "image_size": size, "num_classes": 10, "seed": seed,
          **model_cfg, "channels_last": False}  # fmt: skip
    model = LIGHTLY_METHODS[method](**kw)
    del model.augment
    model.augment = PassViews()
    return model


def recipe(method: str, dataset: str, epochs: int, **model) -> dict:
    from vislearn.core.config import load_config

    path = ROOT / "configs" / "fmnist_ssl" / f"{method}.yaml"
    return load_config(path, data={"dataset": dataset},
                       trainer={"max_epochs": epochs, "check_val_every_n_epoch": epochs,
                                "progress": False}, model=model)  # fmt: skip


# ---- speed ------------------------------------------------------------------------------------
def time_loop(model, loader_or_dm, batches: int, warmup: int, name: str) -> float:
    """Images/s of the training loop over ``batches`` batches after ``warmup`` ones."""
    from lightning.pytorch.callbacks import Callback

    from vislearn.engine.trainer import build_trainer

    class Timer(Callback):
        t0, images = 0.0, 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == warmup - 1:
                self.t0 = time.perf_counter()
            elif batch_idx >= warmup:
                self.images += int(batch[1].shape[0])

    timer = Timer()
    trainer = build_trainer(f"/tmp/vislearn_pipeline/{name}", max_epochs=1, progress=False,
                            limit_train_batches=warmup + batches, check_val_every_n_epoch=10**6,
                            callbacks=[timer])  # fmt: skip
    if hasattr(loader_or_dm, "train_dataloader"):
        trainer.fit(model, datamodule=loader_or_dm)
    else:
        trainer.fit(model, train_dataloaders=loader_or_dm)
    return timer.images / (time.perf_counter() - timer.t0)


def speed(a: argparse.Namespace) -> None:
    import lightning as L
    import torch

    from vislearn.engine.run import quiet_lightning
    from vislearn.tasks.ssl.run import build_datamodule, build_from_config

    torch.set_num_threads(a.threads)
    quiet_lightning()
    rows = []
    for method in a.methods:
        cfg = recipe(method, a.dataset, 1, channels_last=True)  # the engine's fast path
        dm = build_datamodule(cfg)
        loader = lightly_loader(method, a.dataset, cfg["data"]["batch_size"], a.workers, 0)
        speeds: dict[str, list[float]] = {"vislearn": [], "lightly_pipeline": []}
        for rnd in range(a.rounds):
            order = list(speeds) if rnd % 2 == 0 else list(speeds)[::-1]
            for impl in order:
                L.seed_everything(rnd, verbose=False)
                if impl == "vislearn":
                    model = build_from_config(cfg, dm)
                    v = time_loop(model, dm, a.batches, a.warmup, f"{method}_{impl}")
                else:
                    model = lightly_model(method, cfg["model"], rnd)
                    v = time_loop(model, loader, a.batches, a.warmup, f"{method}_{impl}")
                speeds[impl].append(v)
                print(f"{method} {impl} round {rnd}: {v:.0f} images/s", flush=True)
        ratios = [
            v / p for v, p in zip(speeds["vislearn"], speeds["lightly_pipeline"], strict=True)
        ]
        for impl, vals in speeds.items():
            row = {"name": f"{impl}/{method}", "images_per_s": round(statistics.median(vals), 1),
                   "images_per_s_rounds": [round(x, 1) for x in vals]}  # fmt: skip
            if impl == "vislearn":
                row["speed_ratio_vs_lightly_pipeline"] = round(statistics.median(ratios), 3)
                row["speed_ratio_rounds"] = [round(r, 3) for r in ratios]
            rows.append(row)
    settings = {
        "what": "whole training loop (data loading + augmentation + step), images/s",
        "data": f"{a.dataset}, batch 256, recipes configs/fmnist_ssl/<method>.yaml",
        "lightly_pipeline": f"lightly {_lightly_version()} transforms per image in "
        f"{a.workers} DataLoader worker(s), PIL 'L' images, Fashion-MNIST normalisation, blur "
        "off (see benchmarks/fmnist_ssl_pipeline.py)",
        "protocol": f"{a.rounds} rounds alternating (order flipped each round), {a.warmup} "
        f"warm-up + {a.batches} timed batches, median of per-round ratios; one process",
        "threads": a.threads,
        "hardware": f"{platform.machine()}, torch {torch.__version__}, CPU only, 2 shared cores",
    }
    out = Path(a.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    if "heads_and_losses" not in doc and "rows" in doc:  # the old file: heads-and-losses only
        doc = {"heads_and_losses": {"settings": doc.get("settings"), "rows": doc["rows"]}}
    doc = {"benchmark": "fmnist_ssl_speed", "settings": settings, "rows": rows,
           "heads_and_losses": doc.get("heads_and_losses")}  # fmt: skip
    out.write_text(json.dumps(doc, indent=1) + "\n")
    for r in rows:
        print(r)


def _lightly_version() -> str:
    import lightly

    return lightly.__version__


# ---- accuracy: a job table ----------------------------------------------------------------------
def make_jobs(a: argparse.Namespace) -> list[Job]:
    jobs = []
    for seed in a.seeds:
        for m in a.methods:
            impls = ("vislearn", "lightly_pipeline", "vislearn_contiguous")
            for impl in impls if a.contiguous else impls[:2]:
                model = {**(a.model or {})}
                if impl == "vislearn":  # the engine's channels-last step (opt-in)
                    model["channels_last"] = True
                if impl == "vislearn_contiguous":  # the default contiguous layout
                    model["channels_last"] = False
                cfg = recipe(m, a.dataset, a.epochs, **model)
                cfg.pop("seed"), cfg.pop("out")
                if a.limit_batches:
                    cfg["trainer"]["limit_train_batches"] = a.limit_batches
                cfg["data"]["batch_size"] = a.batch_size or cfg["data"]["batch_size"]
                cfg["eval"]["linear_epochs"] = a.linear_epochs or cfg["eval"]["linear_epochs"]
                config = {"impl": impl, "method": m, "workers": a.workers, "recipe": cfg}
                jobs.append(Job(f"{impl}/{m}", seed, config, "fmnist_ssl_pipeline:run_job"))
    return jobs


def run_job(config: dict, seed: int, ctx: dict) -> dict:
    """Train one (impl, method, seed) and evaluate its backbone offline (kNN, linear)."""
    import lightning as L

    from vislearn.engine.trainer import Throughput, build_trainer

    class ViewsThroughput(Throughput):  # a batch is (list of views, labels): count labels
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.images += int(batch[1].shape[0]) * trainer.world_size

    from vislearn.tasks.ssl.run import evaluate, pretrain

    cfg = {**config["recipe"], "seed": seed, "out": ctx["run_dir"]}
    t0 = time.perf_counter()
    if config["impl"].startswith("vislearn"):
        model, _, stats = pretrain(cfg)
    else:
        L.seed_everything(seed, verbose=False)
        d = cfg["data"]
        loader = lightly_loader(config["method"], d["dataset"], d["batch_size"],
                                config["workers"], seed)  # fmt: skip
        model = lightly_model(config["method"], cfg["model"], seed)
        tp = ViewsThroughput()
        t = {**cfg["trainer"], "check_val_every_n_epoch": 10**6}
        trainer = build_trainer(ctx["run_dir"], callbacks=[tp], **t)
        trainer.fit(model, train_dataloaders=loader)
        stats = {"images_per_s": tp.images_per_s, "train_seconds": tp.seconds}
    e = cfg["eval"]
    res = evaluate(model.backbone, cfg["data"]["dataset"], knn_k=e["knn_k"], knn_t=e["knn_t"],
                   linear_epochs=e["linear_epochs"], linear_lr=e["linear_lr"],
                   device="cpu")  # fmt: skip
    return {**res, **stats, "wall_seconds": time.perf_counter() - t0}


def accuracy(a: argparse.Namespace) -> list[dict]:
    done = run_jobs(make_jobs(a), a.cache, a.jobs, report_only=a.report_only,
                    import_paths=[BENCH], show=METRICS)  # fmt: skip
    rows = []
    for m in a.methods:
        rows += aggregate([r for r in done if r["config"]["method"] == m], METRICS,
                          baseline=f"lightly_pipeline/{m}")  # fmt: skip
    settings = {"data": a.dataset, "epochs": a.epochs, "seeds": a.seeds, "workers": a.workers,
                "limit_train_batches": a.limit_batches,
                "pipelines": "see benchmarks/fmnist_ssl_pipeline.py",
                "intervals": "mean over seeds, Student-t 95 %; *_diff: paired (same seed) "
                "against lightly_pipeline/<method>"}  # fmt: skip
    write_results_json(a.out, "fmnist_ssl_pipeline", settings, rows)
    print(render_table(rows, [("kNN", "knn_top1"), ("linear", "linear_top1"), "images_per_s"]))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode")
    s = sub.add_parser("speed")
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--batches", type=int, default=20)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_ssl_speed.json"))
    c = sub.add_parser("accuracy")
    c.add_argument("--epochs", type=int, default=4)
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    c.add_argument("--jobs", type=int, default=1)
    c.add_argument("--limit-batches", type=int, default=None)
    c.add_argument("--batch-size", type=int, default=None)
    c.add_argument("--linear-epochs", type=int, default=None)
    c.add_argument("--contiguous", action="store_true",
                   help="also vislearn_contiguous/<m> rows: channels_last=false (accuracy of the "
                   "channels-last speed-up, within seed noise)")  # fmt: skip
    c.add_argument("--model", type=json.loads, default=None, help="model overrides (JSON)")
    c.add_argument("--cache", default=str(BENCH / ".cache" / "fmnist_ssl_pipeline"))
    c.add_argument("--report-only", action="store_true")
    c.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_ssl_pipeline.json"))
    for q in (s, c):
        q.add_argument("--methods", nargs="+", default=list(METHODS))
        q.add_argument("--dataset", default="fmnist")
        q.add_argument("--workers", type=int, default=2, help="DataLoader workers of lightly")
    a = p.parse_args(argv)
    if a.mode is None:
        a = p.parse_args(["speed", *(argv or [])])
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    speed(a) if a.mode == "speed" else accuracy(a)


if __name__ == "__main__":
    main()
