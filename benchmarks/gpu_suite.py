"""The one-command GPU suite: everything that needs an accelerator, in one process, within a
wall-clock budget (default 600 s on one H100/H200) -> docs/results/gpu_suite.json (with the
GPU's name).

1. ``ssl_throughput``: SSL training images/s of ResNet-18 (CIFAR stem: 3x3/1 conv, no
   pooling) at 32 px in bf16 (``bf16-mixed``), MoCo v2 / SimCLR / BYOL, vislearn (uint8
   batches, on-device augmentation, channels-last) against lightly's pipeline (lightly's
   transforms per image in DataLoader workers, lightly's heads/losses; see
   benchmarks/fmnist_ssl_pipeline.py), rounds alternating, median ratio. Data: random uint8
   CIFAR-sized images (no download on the GPU machine; the per-image work of the transforms
   does not depend on the pixel values).
2. ``dit_xl_timing``: benchmarks/dit_xl_timing.py's :func:`run_timing` (DiT-XL/2 feature
   caching latency).
3. ``fmnist_methods`` (optional, only while the budget lasts): short Fashion-MNIST runs of
   MoCo v2, CsMl, BYOL and SaGe (its evaluator: the BYOL run just trained), images/s and
   online kNN top-1, when Fashion-MNIST is found locally.

    python benchmarks/gpu_suite.py                     # on the GPU machine
    python benchmarks/gpu_suite.py --tiny --out /tmp/gpu_suite.json   # CPU smoke test
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


class Budget:
    def __init__(self, seconds: float) -> None:
        self.t0, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)


def settings_of(tiny: bool) -> dict:
    if tiny:
        return {"backbone": "resnet_tiny", "backbone_kwargs": {"stem": "small", "width": 8},
                "batch": 16, "n_images": 64, "warmup": 1, "batches": 2, "rounds": 1,
                "precision": "32-true", "heads": {"proj_hidden_dim": 32, "pred_hidden_dim": 32,
                                                   "queue_size": 64}}  # fmt: skip
    return {"backbone": "resnet18", "backbone_kwargs": {"stem": "small"}, "batch": 512,
            "n_images": 50_000, "warmup": 5, "batches": 30, "rounds": 3,
            "precision": "bf16-mixed", "heads": {"proj_hidden_dim": 2048, "pred_hidden_dim": 4096,
                                                   "queue_size": 65536}}  # fmt: skip


def ssl_throughput(s: dict, methods: list[str], workers: int, budget: Budget) -> list[dict]:
    import lightning as L
    import numpy as np
    import torch
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

    from fmnist_ssl_pipeline import PilFashionMNIST, lightly_model, lightly_transform
    from vislearn.engine.trainer import build_trainer
    from vislearn.tasks.ssl.methods import build_method

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (s["n_images"], 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, s["n_images"])
    gpu = torch.cuda.is_available()

    def timed_fit(model, loader, name: str) -> float:
        class Timer(Callback):
            t0, n = 0.0, 0

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if gpu:
                    torch.cuda.synchronize()
                if batch_idx == s["warmup"] - 1:
                    self.t0 = time.perf_counter()
                elif batch_idx >= s["warmup"]:
                    self.n += int(batch[1].shape[0])

        timer = Timer()
        trainer = build_trainer(f"/tmp/vislearn_gpu_suite/{name}", max_epochs=1,
                                progress=False, precision=s["precision"], devices=1,
                                limit_train_batches=s["warmup"] + s["batches"],
                                check_val_every_n_epoch=10**6, callbacks=[timer])  # fmt: skip
        trainer.fit(model, train_dataloaders=loader)
        return timer.n / (time.perf_counter() - timer.t0)

    tensors = TensorDataset(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                            torch.from_numpy(labels))  # fmt: skip
    rows = []
    for method in methods:
        model_cfg = {"backbone": s["backbone"], "backbone_kwargs": s["backbone_kwargs"],
                     "lr": 0.06, "proj_dim": 128}  # fmt: skip
        speeds: dict[str, list[float]] = {"vislearn": [], "lightly_pipeline": []}
        for rnd in range(s["rounds"]):
            if budget.left() < 60 and rnd > 0:
                break
            for impl in list(speeds) if rnd % 2 == 0 else list(speeds)[::-1]:
                L.seed_everything(rnd, verbose=False)
                heads = _accepted(method, s["heads"])
                if impl == "vislearn":
                    model = build_method(method, in_chans=3, image_size=32, **model_cfg, **heads)
                    # whole batches by one tensor index (no per-image collate): uint8 to the
                    # device, augmented there
                    batches = BatchSampler(RandomSampler(tensors), s["batch"], drop_last=True)
                    loader = DataLoader(tensors, batch_size=None, sampler=batches,
                                        pin_memory=gpu)  # fmt: skip
                else:
                    model = lightly_model(method, {**model_cfg, **heads}, rnd, in_chans=3, size=32)
                    ds = PilFashionMNIST(images, labels, lightly_transform(method, 32, IMAGENET))
                    loader = DataLoader(ds, batch_size=s["batch"], shuffle=True, drop_last=True,
                                        num_workers=workers, pin_memory=gpu,
                                        persistent_workers=workers > 0)  # fmt: skip
                speeds[impl].append(timed_fit(model, loader, f"{method}_{impl}"))
                print(f"ssl_throughput {method} {impl} round {rnd}: "
                      f"{speeds[impl][-1]:.0f} images/s", flush=True)  # fmt: skip
        ratios = [
            v / p for v, p in zip(speeds["vislearn"], speeds["lightly_pipeline"], strict=True)
        ]
        for impl, vals in speeds.items():
            row = {"name": f"{impl}/{method}", "images_per_s": round(statistics.median(vals), 1),
                   "images_per_s_rounds": [round(v, 1) for v in vals]}  # fmt: skip
            if impl == "vislearn":
                row["speed_ratio_vs_lightly_pipeline"] = round(statistics.median(ratios), 3)
            rows.append(row)
    return rows


def _accepted(method: str, kwargs: dict) -> dict:
    import inspect

    from fmnist_ssl_pipeline import METHODS
    from lightly_methods import LIGHTLY_METHODS
    from vislearn.tasks.ssl.methods import get_method

    params = set(inspect.signature(get_method(method).__init__).parameters)
    if method in METHODS:
        params &= set(inspect.signature(LIGHTLY_METHODS[method].__init__).parameters)
    return {k: v for k, v in kwargs.items() if k in params}


def fmnist_methods(tiny: bool, budget: Budget) -> list[dict]:
    """Short runs of MoCo v2, CsMl, BYOL, SaGe on Fashion-MNIST while the budget lasts."""
    import torch

    from vislearn.core.config import load_config
    from vislearn.tasks.ssl.run import pretrain

    dataset = "fmnist-mini" if tiny else "fmnist"
    epochs = 1 if tiny else 4
    rows, evaluator = [], None
    for method in ("moco_v2", "csml", "byol", "sage"):
        if budget.left() < (0 if tiny else 90):
            rows.append({"name": f"vislearn/{method}", "skipped": "wall-clock budget"})
            continue
        model: dict = {}
        if tiny:
            model = {"backbone_kwargs": {"stem": "small_ds", "width": 8},
                     **_accepted(method, settings_of(True)["heads"])}  # fmt: skip
        if method == "sage":
            if evaluator is None:
                rows.append({"name": "vislearn/sage", "skipped": "no BYOL evaluator"})
                continue
            model["evaluator"] = evaluator
        trainer = {"max_epochs": epochs, "check_val_every_n_epoch": epochs, "progress": False,
                   "precision": "32-true" if tiny else "bf16-mixed"}  # fmt: skip
        if tiny:
            trainer["limit_train_batches"] = 2
        out = f"/tmp/vislearn_gpu_suite/fmnist_{method}"
        cfg = load_config(ROOT / "configs" / "fmnist_ssl" / f"{method}.yaml", out=out,
                          data={"dataset": dataset, **({"batch_size": 32} if tiny else {})},
                          trainer=trainer, model=model)  # fmt: skip
        t0 = time.perf_counter()
        m, _, stats = pretrain(cfg, resume=False)
        knn = m.trainer.callback_metrics.get("val/knn_top1")
        rows.append({"name": f"vislearn/{method}", "epochs": epochs,
                     "images_per_s": round(stats.get("images_per_s", 0.0), 1),
                     "online_knn_top1": None if knn is None else round(100 * float(knn), 2),
                     "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        if method == "byol":
            evaluator = str(Path(out) / "checkpoints" / "last.ckpt")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> dict:
    import torch

    from vislearn.core.utils import write_json
    from vislearn.engine.run import quiet_lightning

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke-test settings")
    p.add_argument("--budget-s", type=float, default=600.0, help="wall-clock budget")
    p.add_argument("--methods", nargs="+", default=["moco_v2", "simclr", "byol"])
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                   help="DataLoader workers of lightly's pipeline")  # fmt: skip
    p.add_argument("--skip", nargs="*", default=[], choices=["ssl", "dit", "fmnist"])
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "gpu_suite.json"))
    a = p.parse_args(argv)
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    quiet_lightning()
    budget = Budget(a.budget_s)
    gpu = torch.cuda.is_available()
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    s = settings_of(a.tiny)
    doc: dict = {
        "benchmark": "gpu_suite",
        "device": torch.cuda.get_device_name() if gpu else f"CPU ({platform.machine()})",
        "torch": torch.__version__,
        "tiny": a.tiny,
        "settings": {
            "ssl": {k: v for k, v in s.items()},
            "workers": a.workers,
            "budget_s": a.budget_s,
        },  # fmt: skip
        "sections": {},
    }

    def section(name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            doc["sections"][name] = {"rows": fn(), "seconds": round(time.perf_counter() - t0, 1)}
        except Exception as exc:  # one failing section does not lose the others
            traceback.print_exc()
            doc["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        write_json(a.out, doc)  # after every section: a killed suite keeps what it has

    if "ssl" not in a.skip:
        section("ssl_throughput", lambda: ssl_throughput(s, a.methods, a.workers, budget))
    if "dit" not in a.skip:
        from dit_xl_timing import run_timing

        def dit() -> list[dict]:
            res = run_timing(device="cuda" if gpu else "cpu", dtype="bf16" if gpu else "fp32",
                             tiny=a.tiny, steps=4 if a.tiny else None,
                             repeats=1 if a.tiny else None, flops=not a.tiny)  # fmt: skip
            doc["settings"]["dit_xl_timing"] = res["settings"]
            return res["rows"]

        section("dit_xl_timing", dit)
    if "fmnist" not in a.skip:
        section("fmnist_methods", lambda: fmnist_methods(a.tiny, budget))
    doc["wall_seconds"] = round(a.budget_s - budget.left(), 1)
    write_json(a.out, doc)
    print(f"wrote {a.out} ({doc['wall_seconds']} s)")
    return doc


if __name__ == "__main__":
    main()
