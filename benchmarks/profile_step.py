"""Where a training step spends its time: torch.profiler over the Lightning training loop of an
SSL method, split by the engine's ``record_function`` ranges -> the table of docs/RESULTS.md
("Where a training step spends its time") and docs/results/profile_step.json.

Ranges (exclusive times, ms per step): ``data_loading`` (the next batch from the DataLoader,
wrapped here), ``ema``, ``augmentation``, ``forward`` (the method's ``ssl_step`` minus its
``queue`` writes), ``queue``, ``online_probe``, ``logging`` (``self.log*``), ``backward``,
``optimizer`` (the ``optimizer_step`` range minus the closure's training step and backward,
i.e. the SGD update and the LR scheduler), ``other`` (Lightning's loop, hooks, zero_grad:
step wall time minus all of the above).

    python benchmarks/profile_step.py --methods moco_v2 csml --steps 20 --warmup 5
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANGES = ("data_loading", "ema", "augmentation", "forward", "queue", "online_probe", "logging",
          "backward", "optimizer")  # fmt: skip


class TimedLoader:
    """A DataLoader whose every ``next`` is a ``data_loading`` profiler range."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        from torch.profiler import record_function

        it = iter(self.loader)
        while True:
            with record_function("data_loading"):
                try:
                    batch = next(it)
                except StopIteration:
                    return
            yield batch


def exclusive_ms(totals: dict[str, float], steps: int, wall_ms: float) -> dict[str, float]:
    """Exclusive ms per step of each range from the profiler's inclusive totals (us)."""
    per = {k: totals.get(k, 0.0) / 1e3 / steps for k in (*RANGES, "optimizer_step")}
    out = {k: per[k] for k in RANGES}
    out["forward"] = per["forward"] - per["queue"]
    closure = sum(per[k] for k in ("ema", "augmentation", "forward", "online_probe", "logging"))
    out["optimizer"] = max(0.0, per["optimizer_step"] - closure - per["backward"])
    out["other"] = max(0.0, wall_ms - sum(out.values()))
    return out


def profile_method(method: str, steps: int, warmup: int, dataset: str, workers: int,
                   model_overrides: dict | None = None) -> dict:  # fmt: skip
    """Profile ``steps`` training steps (after ``warmup``) of configs/fmnist_ssl/<method>.yaml."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from torch.profiler import ProfilerActivity, profile

    from vislearn.core.config import load_config
    from vislearn.engine.trainer import build_trainer
    from vislearn.tasks.ssl.run import build_datamodule, build_from_config

    cfg = load_config(ROOT / "configs" / "fmnist_ssl" / f"{method}.yaml",
                      data={"dataset": dataset, "num_workers": workers},
                      model=model_overrides or {})  # fmt: skip
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    model = build_from_config(cfg, dm)
    loader_fn = dm.train_dataloader
    dm.train_dataloader = lambda: TimedLoader(loader_fn())  # type: ignore[method-assign]

    class Prof(Callback):
        def __init__(self) -> None:
            self.prof = profile(activities=[ProfilerActivity.CPU])
            self.t0 = 0.0
            self.wall = 0.0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if batch_idx == warmup - 1:
                self.prof.__enter__()
                self.t0 = time.perf_counter()
            elif batch_idx == warmup + steps - 1:
                self.wall = time.perf_counter() - self.t0
                self.prof.__exit__(None, None, None)

    cb = Prof()
    trainer = build_trainer(f"/tmp/vislearn_profile/{method}", max_epochs=1, progress=False,
                            limit_train_batches=warmup + steps, check_val_every_n_epoch=10**6,
                            callbacks=[cb])  # fmt: skip
    trainer.fit(model, datamodule=dm)
    totals: dict[str, float] = {}
    for ev in cb.prof.key_averages():
        if ev.key in (*RANGES, "optimizer_step"):
            totals[ev.key] = totals.get(ev.key, 0.0) + ev.cpu_time_total
    wall_ms = 1e3 * cb.wall / steps
    ms = exclusive_ms(totals, steps, wall_ms)
    return {"method": method, "step_ms": round(wall_ms, 2),
            "ms": {k: round(v, 2) for k, v in ms.items()},
            "share_pct": {k: round(100 * v / wall_ms, 1) for k, v in ms.items()}}  # fmt: skip


def markdown(rows: list[dict]) -> str:
    keys = [*RANGES, "other"]
    head = "| range | " + " | ".join(f"{r['method']} ms (%)" for r in rows) + " |"
    lines = [head, "|---|" + "---:|" * len(rows)]
    for k in keys:
        cells = [f"{r['ms'][k]:.1f} ({r['share_pct'][k]:.0f} %)" for r in rows]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("| **step** | " + " | ".join(f"**{r['step_ms']:.1f}**" for r in rows) + " |")
    return "\n".join(lines)


def main() -> None:
    import torch

    from vislearn.core.utils import write_json
    from vislearn.engine.run import quiet_lightning

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["moco_v2", "csml"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", nargs="*", default=[], help="model overrides key=value (yaml values)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "profile_step.json"))
    a = p.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    torch.set_num_threads(a.threads)
    quiet_lightning()
    rows = [profile_method(m, a.steps, a.warmup, a.dataset, a.workers, overrides)
            for m in a.methods]  # fmt: skip
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    settings = {"data": f"{a.dataset}, batch 256, configs/fmnist_ssl/<method>.yaml",
                "steps": a.steps, "warmup": a.warmup, "threads": a.threads,
                "num_workers": a.workers, "model_overrides": overrides,
                "hardware": f"{platform.machine()}, torch {torch.__version__}, "
                f"{device}"}  # fmt: skip
    write_json(a.out, {"benchmark": "profile_step", "settings": settings, "rows": rows})
    print(markdown(rows))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    main()
