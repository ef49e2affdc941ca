"""`vislearn pretrain` killed with SIGTERM mid-epoch: exit 143, one line, last.ckpt; rerunning
the same command resumes and ends with the weights of an uninterrupted run (bitwise, one
thread). A resume into a folder of another run, or from a damaged last.ckpt: status 2, one
line, nothing in the folder changed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
STOP_STEP = 8  # 6 steps per epoch: batch 3 of epoch 2
ARGS = [
    "pretrain",
    "moco_v2",
    "--data",
    "fmnist-mini",
    "model.backbone_kwargs={stem: small_ds, width: 8}",
    "data.batch_size=64",
    "data.knn_bank_size=256",
    "trainer.limit_train_batches=6",
    "trainer.max_epochs=2",
    "trainer.progress=false",
]
# The interrupted run: the real CLI, with a hook that marks step STOP_STEP and waits there
# until the signal has arrived (so the stop step is deterministic).
HOOKED = """
import sys, time
from pathlib import Path
from vislearn.engine import trainer as T
original = T.Throughput.on_train_batch_end
def hooked(self, trainer, pl_module, outputs, batch, batch_idx):
    original(self, trainer, pl_module, outputs, batch, batch_idx)
    if trainer.global_step == {step}:
        Path({marker!r}).touch()
        stops = [cb for cb in trainer.callbacks if hasattr(cb, "signum")]
        t0 = time.time()
        while stops[0].signum is None and time.time() - t0 < 120:
            time.sleep(0.02)
T.Throughput.on_train_batch_end = hooked
from vislearn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return {**env, "CUDA_VISIBLE_DEVICES": ""}


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vislearn", *ARGS, "--out", str(out), *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run and one interrupted at STOP_STEP (both at once), then the rerun."""
    root = tmp_path_factory.mktemp("signals")
    ref, run, marker = root / "ref", root / "run", root / "step.marker"
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": _env()}
    reference = subprocess.Popen(_cmd(ref), **pipe)
    script = HOOKED.format(step=STOP_STEP, marker=str(marker))
    hooked = subprocess.Popen([sys.executable, "-c", script, *_cmd(run)[3:]], **pipe)
    t0 = time.time()
    while not marker.exists() and hooked.poll() is None and time.time() - t0 < 300:
        time.sleep(0.05)
    hooked.send_signal(signal.SIGTERM)
    _, hooked_err = hooked.communicate(timeout=300)
    reference.communicate(timeout=300)
    assert reference.returncode == 0
    interrupted = {
        "status": hooked.returncode,
        "stderr": hooked_err,
        "csv": (run / "csv" / "metrics.csv").read_text(),
        "ckpt": (run / "checkpoints" / "last.ckpt").is_file(),
    }
    saved = root / "saved"  # the interrupted folder, for the error tests
    shutil.copytree(run, saved)
    rerun = subprocess.run(_cmd(run), **pipe, timeout=300)
    return {"ref": ref, "run": run, "saved": saved, "interrupted": interrupted, "rerun": rerun}


def test_sigterm_saves_last_ckpt_and_exits_143(runs):
    got = runs["interrupted"]
    last = runs["run"] / "checkpoints" / "last.ckpt"
    assert got["status"] == 143, got["stderr"][-2000:]
    lines = [line for line in got["stderr"].splitlines() if line.startswith("vislearn:")]
    assert lines == [
        f"vislearn: interrupted by SIGTERM at step {STOP_STEP}; checkpoint saved to {last}; "
        "rerun the same command to resume"
    ]
    assert got["ckpt"]


def test_rerun_resumes_to_the_uninterrupted_weights(runs):
    import torch
    from safetensors.torch import load_file

    assert runs["rerun"].returncode == 0, runs["rerun"].stderr[-2000:]
    assert "resuming from" in runs["rerun"].stdout
    ref = load_file(runs["ref"] / "backbone.safetensors")
    got = load_file(runs["run"] / "backbone.safetensors")
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    a = torch.load(runs["ref"] / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(runs["run"] / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for key in a:  # the momentum encoder and the queue too
        assert torch.equal(a[key], b[key]), key


def test_csv_keeps_the_interrupted_rows(runs):
    before = runs["interrupted"]["csv"].splitlines()
    after = (runs["run"] / "csv" / "metrics.csv").read_text().splitlines()
    assert len(after) > len(before) > 1
    steps = lambda lines: {line.split(",")[-1] for line in lines[1:]}  # noqa: E731
    assert steps(before) <= steps(after) or len(after) > len(before)


def test_backbone_records_its_training_data(runs):
    from safetensors import safe_open

    with safe_open(runs["run"] / "backbone.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["train_dataset"] == "fmnist-mini"
    import torch

    ckpt = torch.load(runs["run"] / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["vislearn"]["config"]["data"]["dataset"] == "fmnist-mini"


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> list[str]:
    err = capsys.readouterr().err.splitlines()
    return [line for line in err if line.startswith("vislearn:")]


def test_resume_with_another_backbone_is_one_line_and_changes_nothing(runs, capsys):
    from vislearn.cli import main

    folder = runs["saved"]
    before = _snapshot(folder)
    args = [a if not a.startswith("model.") else "model.backbone_kwargs={width: 16}" for a in ARGS]
    assert main([*args, "--out", str(folder)]) == 2
    lines = _one_error_line(capsys)
    assert len(lines) == 1 and lines[0].startswith("vislearn: error: ")
    assert "model.backbone_kwargs" in lines[0] and "--no-resume" in lines[0]
    assert _snapshot(folder) == before


def test_damaged_last_ckpt_is_one_line_and_changes_nothing(runs, tmp_path, capsys):
    from vislearn.cli import main

    folder = tmp_path / "damaged"
    shutil.copytree(runs["saved"], folder)
    last = folder / "checkpoints" / "last.ckpt"
    last.write_bytes(b"not a checkpoint")
    before = _snapshot(folder)
    assert main([*ARGS, "--out", str(folder)]) == 2
    lines = _one_error_line(capsys)
    assert len(lines) == 1 and "damaged" in lines[0] and str(last) in lines[0]
    assert _snapshot(folder) == before
