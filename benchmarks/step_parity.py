"""Do two checkouts of vislearn train the same weights? Fits a method for a few steps in one
subprocess per checkout (``PYTHONPATH=<src>``, 1 thread, same seed, the embedded data set)
and compares every tensor of the final state dict: bitwise, or the largest difference ->
docs/results/step_parity.json.

    python benchmarks/step_parity.py --base /tmp/vislearn-base/src --set channels_last=false
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, sys, warnings
import torch
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
import lightning as L
from vislearn.data.datamodule import ImageDataModule
from vislearn.engine.trainer import build_trainer
from vislearn.tasks.ssl.methods import build_method
method, steps, out, kw = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
L.seed_everything(0, verbose=False)
model = build_method(method, backbone="resnet_tiny", **kw)
trainer = build_trainer(out + "_run", max_epochs=1, limit_train_batches=steps, progress=False,
                        accelerator="cpu", devices=1, check_val_every_n_epoch=10**6)
trainer.fit(model, datamodule=ImageDataModule(batch_size=64, knn_bank_size=200))
torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, out)
"""


def train(src: str, method: str, steps: int, kw: dict, out: str) -> dict:
    import torch

    env = {**os.environ, "PYTHONPATH": src}
    args = [sys.executable, "-c", CHILD, method, str(steps), out, json.dumps(kw)]
    r = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return torch.load(out)


def main() -> None:
    import yaml

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="src folder of the reference checkout")
    p.add_argument("--new", default=str(ROOT / "src"))
    p.add_argument("--methods", nargs="+", default=["moco_v2", "byol", "csml"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--set", nargs="*", default=[], help="model options of the NEW side, k=v")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "step_parity.json"))
    a = p.parse_args()
    new_kw = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    common = {"backbone_kwargs": {"stem": "small_ds", "width": 16}, "queue_size": 512}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in a.methods:
            kw = {**common}
            if method == "byol":
                kw.pop("queue_size")
            if method == "csml":
                kw["bag_num_workers"] = 0
            base = train(a.base, method, a.steps, kw, f"{tmp}/{method}_base.pt")
            new = train(a.new, method, a.steps, {**kw, **new_kw}, f"{tmp}/{method}_new.pt")
            diffs = {
                k: float((base[k].double() - new[k].double()).abs().max())
                for k in base
                if base[k].is_floating_point()
            }
            equal = all(torch_equal(base[k], new[k]) for k in base) and base.keys() == new.keys()
            rows.append({"method": method, "bitwise_equal": equal,
                         "max_abs_diff": max(diffs.values()), "tensors": len(base)})  # fmt: skip
            print(rows[-1], flush=True)
    doc = {"benchmark": "step_parity", "steps": a.steps, "new_options": new_kw,
           "setting": "resnet_tiny width 16, batch 64, fmnist-mini, 1 thread, seed 0",
           "rows": rows}  # fmt: skip
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


if __name__ == "__main__":
    main()
