"""Training-step speed of this checkout against another checkout of vislearn (e.g. the code
before a speed-up), as an interleaved ratio -> docs/results/step_speedup.json.

One training process per side (``PYTHONPATH=<src>``) fits configs/fmnist_ssl/<method>.yaml;
the two run in lock-step, one batch (data fetch + step) at a time, alternating base/new (the
order flips every round), so only one trains at any moment and both see the same machine
load. After ``--warmup`` rounds, the result is the median of the per-round ratios of batch
times base/new (robust to the drifting load of a shared machine).

    git worktree add /tmp/vislearn-base <commit>
    python benchmarks/step_speedup.py --base /tmp/vislearn-base/src --methods moco_v2 csml
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, warnings
import torch
warnings.filterwarnings("ignore")
cfg_path, threads, total, overrides = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    json.loads(sys.argv[4])
torch.set_num_threads(threads)
import lightning as L
from lightning.pytorch.callbacks import Callback
from vislearn.core.config import load_config
from vislearn.engine.trainer import build_trainer
from vislearn.tasks.ssl.run import build_datamodule, build_from_config
cfg = load_config(cfg_path, model=overrides)
L.seed_everything(0, verbose=False)
dm = build_datamodule(cfg)
model = build_from_config(cfg, dm)
class Lockstep(Callback):
    # one batch (fetch + step) per "go" line on stdin; its seconds on stdout
    t0 = None
    def on_train_start(self, trainer, pl_module):
        print("READY", flush=True)
        sys.stdin.readline()
        self.t0 = time.perf_counter()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        print("SECONDS", time.perf_counter() - self.t0, flush=True)
        sys.stdin.readline()
        self.t0 = time.perf_counter()
trainer = build_trainer("/tmp/vislearn_step_speedup", max_epochs=1, progress=False,
                        limit_train_batches=total, check_val_every_n_epoch=10**6,
                        callbacks=[Lockstep()])
trainer.fit(model, datamodule=dm)
"""


class Side:
    """A training process that runs one batch per :meth:`step` (lock-step with the other)."""

    def __init__(self, src: str, method: str, threads: int, total: int, overrides: dict) -> None:
        cfg = ROOT / "configs" / "fmnist_ssl" / f"{method}.yaml"
        env = {**os.environ, "PYTHONPATH": src, "PYTHONWARNINGS": "ignore"}
        args = [sys.executable, "-c", CHILD, str(cfg), str(threads), str(total),
                json.dumps(overrides)]  # fmt: skip
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)  # fmt: skip
        self._expect("READY")

    def _expect(self, tag: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(tag):
                return line
        raise RuntimeError(f"training process ended before {tag} (rc {self.proc.wait()})")

    def step(self) -> float:
        """Seconds of one training batch (data fetch + step)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return float(self._expect("SECONDS").split()[1])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="src folder of the reference checkout")
    p.add_argument("--new", default=str(ROOT / "src"), help="src folder of the new checkout")
    p.add_argument("--methods", nargs="+", default=["moco_v2"])
    p.add_argument("--rounds", type=int, default=30, help="timed batches per side")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", nargs="*", default=[], help="model overrides of the NEW side, k=v")
    p.add_argument("--base-set", nargs="*", default=[], help="model overrides of the base side")
    p.add_argument("--name", default="", help="row name suffix")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "step_speedup.json"))
    a = p.parse_args()
    import yaml

    def parse(items: list[str]) -> dict:
        return {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in items)}

    new_set, base_set = parse(a.set), parse(a.base_set)
    out = Path(a.out)
    doc = json.loads(out.read_text()) if out.exists() else {"benchmark": "step_speedup", "rows": []}
    for method in a.methods:
        total = a.warmup + a.rounds
        sides = {"base": Side(a.base, method, a.threads, total, base_set),
                 "new": Side(a.new, method, a.threads, total, new_set)}  # fmt: skip
        base, new, ratios = [], [], []
        try:
            for rnd in range(total):
                order = ["base", "new"] if rnd % 2 == 0 else ["new", "base"]
                t = {side: sides[side].step() for side in order}
                if rnd < a.warmup:
                    continue
                base.append(256 / t["base"])
                new.append(256 / t["new"])
                ratios.append(t["base"] / t["new"])
                print(f"{method} step {rnd}: base {base[-1]:.0f} new {new[-1]:.0f} images/s, "
                      f"ratio {ratios[-1]:.3f}", flush=True)  # fmt: skip
        finally:
            for side in sides.values():
                side.close()
        name = f"{method}{'/' + a.name if a.name else ''}"
        row = {"name": name, "speed_ratio_median": round(statistics.median(ratios), 3),
               "ratios": [round(r, 3) for r in ratios],
               "base_images_per_s": [round(x, 1) for x in base],
               "new_images_per_s": [round(x, 1) for x in new],
               "new_overrides": new_set, "base_overrides": base_set,
               "protocol": f"two processes in lock-step, one batch each per round, order "
               f"alternating; {a.warmup} warm-up + {a.rounds} timed rounds, batch 256, "
               f"{a.threads} thread(s), "
               f"{platform.machine()}"}  # fmt: skip
        doc["rows"] = [r for r in doc["rows"] if r["name"] != name] + [row]
        print(json.dumps(row))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
