"""Training-step speed of this checkout against another checkout of vislearn (e.g. the code
before a speed-up), as an interleaved ratio -> docs/results/step_speedup.json.

Each round runs one subprocess per side (``PYTHONPATH=<src>``), alternating base/new (the
order flips every round), that fits configs/fmnist_ssl/<method>.yaml for ``--warmup +
--steps`` batches and reports the images/s of the last ``--steps``; the result is the
median of the per-round ratios new/base (robust to drifting machine load).

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
cfg_path, threads, warmup, steps, overrides = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), json.loads(sys.argv[5])
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
class T(Callback):
    t0 = None
    n = 0
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == warmup - 1:
            self.t0 = time.perf_counter()
        elif batch_idx >= warmup:
            self.n += int(batch[0].shape[0])
t = T()
trainer = build_trainer("/tmp/vislearn_step_speedup", max_epochs=1, progress=False,
                        limit_train_batches=warmup + steps, check_val_every_n_epoch=10**6,
                        callbacks=[t])
trainer.fit(model, datamodule=dm)
print("IMAGES_PER_S", t.n / (time.perf_counter() - t.t0))
"""


def run_side(src: str, method: str, threads: int, warmup: int, steps: int, overrides: dict) -> float:
    cfg = ROOT / "configs" / "fmnist_ssl" / f"{method}.yaml"
    env = {**os.environ, "PYTHONPATH": src, "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-c", CHILD, str(cfg), str(threads), str(warmup), str(steps),
            json.dumps(overrides)]  # fmt: skip
    r = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("IMAGES_PER_S")]
    if not lines:
        raise RuntimeError(f"{src}: {r.stderr[-2000:]}")
    return float(lines[-1].split()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="src folder of the reference checkout")
    p.add_argument("--new", default=str(ROOT / "src"), help="src folder of the new checkout")
    p.add_argument("--methods", nargs="+", default=["moco_v2"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
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
        base, new, ratios = [], [], []
        for rnd in range(a.rounds):
            sides = [("base", a.base, base_set), ("new", a.new, new_set)]
            for side, src, ov in sides if rnd % 2 == 0 else sides[::-1]:
                v = run_side(src, method, a.threads, a.warmup, a.steps, ov)
                (base if side == "base" else new).append(v)
            ratios.append(new[-1] / base[-1])
            print(f"{method} round {rnd}: base {base[-1]:.0f} new {new[-1]:.0f} images/s, "
                  f"ratio {ratios[-1]:.3f}", flush=True)  # fmt: skip
        name = f"{method}{'/' + a.name if a.name else ''}"
        row = {"name": name, "speed_ratio_median": round(statistics.median(ratios), 3),
               "ratios": [round(r, 3) for r in ratios],
               "base_images_per_s": [round(x, 1) for x in base],
               "new_images_per_s": [round(x, 1) for x in new],
               "new_overrides": new_set, "base_overrides": base_set,
               "protocol": f"{a.rounds} rounds, alternating subprocesses, {a.warmup} warm-up + "
               f"{a.steps} timed batches of 256, {a.threads} thread(s), "
               f"{platform.machine()}"}  # fmt: skip
        doc["rows"] = [r for r in doc["rows"] if r["name"] != name] + [row]
        print(json.dumps(row))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
