"""Training throughput of vislearn vs lightly, measured in one process with interleaved
repeats (median), the fairest ratio on a shared machine -> the ``heads_and_losses`` table of
docs/results/fmnist_ssl_speed.json (its ``rows``: the end-to-end comparison with lightly's own
data pipeline, benchmarks/fmnist_ssl_pipeline.py).

Each repeat fits one epoch of ``--batches`` batches of full Fashion-MNIST with the recipe of
configs/fmnist_ssl/<method>.yaml; implementations alternate (vislearn, lightly, vislearn
with ``joint_views=True``, ...) so drifting machine load hits all alike. The first batch
of every fit is excluded (warm-up).

    python benchmarks/fmnist_ssl_speed.py --repeats 3 --batches 40
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


def time_fit(model, dm, batches: int, name: str) -> float:
    """Images/s of one fit of ``batches`` training batches (first batch excluded; images =
    ``batch[0]`` rows, the anchors)."""
    from lightning.pytorch.callbacks import Callback

    from vislearn.engine.trainer import build_trainer

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.t0, self.images = None, 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == 0:  # warm-up batch excluded
                self.t0 = time.perf_counter()
            else:
                self.images += int(batch[0].shape[0])

    timer = StepTimer()
    trainer = build_trainer(
        f"/tmp/vislearn_speed/{name}",
        max_epochs=1,
        limit_train_batches=batches,
        progress=False,
        check_val_every_n_epoch=10**6,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    return timer.images / (time.perf_counter() - timer.t0)


def main() -> None:
    import lightning as L
    import torch

    from lightly_methods import LIGHTLY_METHODS
    from vislearn.core.config import load_config
    from vislearn.core.utils import write_json
    from vislearn.tasks.ssl.run import build_datamodule, build_from_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["moco_v2", "simclr", "byol"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "fmnist_ssl_speed.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    rows = []
    for method in a.methods:
        cfg = load_config(
            ROOT / "configs" / "fmnist_ssl" / f"{method}.yaml",
            data={"dataset": a.dataset},
            trainer={"progress": False},
        )
        dm = build_datamodule(cfg)
        impls = ("vislearn", "lightly", "vislearn_joint")
        speeds: dict[str, list[float]] = {i: [] for i in impls}
        for rep in range(a.repeats):
            for impl in impls:
                L.seed_everything(rep, verbose=False)
                if impl.startswith("vislearn"):
                    joint = {"joint_views": impl == "vislearn_joint"}
                    model = build_from_config({**cfg, "model": {**cfg["model"], **joint}}, dm)
                else:
                    kw = {
                        "in_chans": dm.channels,
                        "image_size": dm.image_size,
                        "num_classes": dm.num_classes,
                        "seed": rep,
                        **cfg["model"],
                    }
                    model = LIGHTLY_METHODS[method](**kw)
                speeds[impl].append(time_fit(model, dm, a.batches, f"{method}_{impl}"))
                print(f"{method} {impl} repeat {rep}: {speeds[impl][-1]:.0f} images/s", flush=True)
        med = {k: statistics.median(v) for k, v in speeds.items()}
        names = {
            "vislearn": f"vislearn/{method}",
            "lightly": f"lightly/{method}",
            "vislearn_joint": f"vislearn/{method}_joint_views",
        }
        for impl in impls:
            row = {
                "name": names[impl],
                "images_per_s": round(med[impl], 1),
                "images_per_s_repeats": [round(x, 1) for x in speeds[impl]],
            }
            if impl != "lightly":
                row["speed_ratio_vs_lightly"] = round(med[impl] / med["lightly"], 3)
            rows.append(row)
    settings = {
        "data": f"{a.dataset}, batch 256, recipes configs/fmnist_ssl/<method>.yaml",
        "protocol": f"{a.repeats} interleaved repeats x {a.batches} batches (first excluded), "
        "median; one process, training step incl. augmentation, optimiser and "
        "online probe, no validation",
        "threads": a.threads,
        "hardware": f"{platform.machine()}, 2 CPU cores, torch {torch.__version__}, no GPU",
    }
    # the second table of the file: the end-to-end rows (fmnist_ssl_pipeline.py speed) stay
    out = Path(a.out)
    doc = json.loads(out.read_text()) if out.exists() else {"benchmark": "fmnist_ssl_speed"}
    if "heads_and_losses" not in doc:  # an old file held this table as its rows
        doc = {"benchmark": "fmnist_ssl_speed"}
    doc["heads_and_losses"] = {"settings": settings, "rows": rows}
    write_json(a.out, doc)
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
