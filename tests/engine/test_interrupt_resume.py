"""fit() survives its user: a signal saves last.ckpt mid-epoch and the resume equals the
uninterrupted run; a resume of another run or of a damaged checkpoint is a one-line error that
changes nothing; logs keep their rows; throughput leaves validation out."""

from __future__ import annotations

import csv
import os
import signal
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import TensorDataset

from vislearn.core.errors import VislearnError
from vislearn.data.resume import SeededDistributedSampler, TrainLoader
from vislearn.engine.module import TrainModule
from vislearn.engine.run import RunInterrupted, fit, last_checkpoint
from vislearn.engine.trainer import Throughput

N, BATCH = 40, 8  # 5 batches per epoch


class Toy(TrainModule):
    def __init__(self, val_sleep: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 1))
        self.val_sleep = val_sleep

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x).squeeze(1), y)  # dropout: the global RNG

    def validation_step(self, batch, batch_idx):
        time.sleep(self.val_sleep)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


class ToyData(L.LightningDataModule):
    def __init__(self, val: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.ds = TensorDataset(torch.randn(N, 4, generator=g), torch.randn(N, generator=g))
        if val:
            self.val_dataloader = lambda: torch.utils.data.DataLoader(self.ds, batch_size=20)

    def train_dataloader(self):
        sampler = SeededDistributedSampler(self.ds, num_replicas=1, rank=0, seed=3)
        loop = self.trainer.fit_loop

        def position():
            done = loop.epoch_loop.batch_progress.current.processed
            if done >= self.trainer.num_training_batches:
                return sampler.epoch + 1, 0
            return sampler.epoch, done

        return TrainLoader(self.ds, batch_size=BATCH, sampler=sampler, position=position, seed=0)


class SignalAt(Callback):
    """Sends ``signum`` to this process during training step ``step``."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


TRAINER = {"max_epochs": 3, "progress": False, "accelerator": "cpu", "log_every_n_steps": 1}
CONFIG = {"method": "toy", "model": {"backbone": "a", "backbone_kwargs": {"w": 1}}, "seed": 0}
KEYS = ("method", "model.backbone", "model.backbone_kwargs", "seed")


def _run(out, callbacks=(), config=CONFIG, val_sleep=0.0, **kw):
    torch.manual_seed(0)
    model = Toy(val_sleep)
    res = fit(
        model,
        ToyData(val=val_sleep > 0),
        out,
        {**TRAINER, **kw},
        config=config,
        run_keys=KEYS,
        callbacks=callbacks,
    )
    return model, res


def _rows(out):
    with open(out / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_epoch_saves_and_resume_equals_uninterrupted(tmp_path, capsys, signum, status):
    torch.set_num_threads(1)
    ref, _ = _run(tmp_path / "ref")
    before = signal.getsignal(signum)
    with pytest.raises(RunInterrupted) as info:
        _run(tmp_path / "run", callbacks=[SignalAt(7, signum)])  # epoch 1, batch 2 of 5
    assert info.value.code == status and info.value.step == 8
    assert signal.getsignal(signum) is before  # handlers put back
    name = signal.Signals(signum).name
    path = last_checkpoint(tmp_path / "run")
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vislearn:")]
    assert err == [
        f"vislearn: interrupted by {name} at step 8; checkpoint saved to {path}; "
        "rerun the same command to resume"
    ]
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["global_step"] == 8
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": 3}
    ]
    assert ckpt["vislearn"]["config"] == CONFIG
    steps_before = {r["step"] for r in _rows(tmp_path / "run")}
    model, res = _run(tmp_path / "run")
    assert res.resumed and res.trainer.global_step == 15
    for (k, a), b in zip(ref.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    steps_after = {r["step"] for r in _rows(tmp_path / "run")}
    assert steps_before and steps_before < steps_after  # earlier rows kept, new ones added


def _snapshot(out):
    return {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_resume_of_another_run_is_one_line_error_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    _run(out, max_epochs=1)
    before = _snapshot(out)
    other = {**CONFIG, "model": {"backbone": "b", "backbone_kwargs": {"w": 1}}}
    with pytest.raises(VislearnError) as info:
        _run(out, config=other, max_epochs=2)
    msg = str(info.value)
    assert "\n" not in msg
    assert "model.backbone is 'a' there but 'b' now" in msg and "--no-resume" in msg
    assert _snapshot(out) == before


def test_damaged_checkpoint_is_one_line_error_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    _run(out, max_epochs=1)
    last = last_checkpoint(out)
    last.write_bytes(last.read_bytes()[:200])
    before = _snapshot(out)
    with pytest.raises(VislearnError) as info:
        _run(out, max_epochs=2)
    assert "\n" not in str(info.value) and "damaged" in str(info.value)
    assert _snapshot(out) == before


def test_csv_rows_kept_across_resume(tmp_path):
    out = tmp_path / "run"
    _run(out, max_epochs=1)
    first = _rows(out)
    _run(out, max_epochs=2)
    rows = _rows(out)
    assert len(rows) > len(first)
    assert [r["step"] for r in rows[: len(first)]] == [r["step"] for r in first]
    assert max(int(r["step"]) for r in rows) > max(int(r["step"]) for r in first)


def test_throughput_excludes_validation(tmp_path):
    torch.set_num_threads(1)
    tp = Throughput()
    t0 = time.perf_counter()
    _run(tmp_path / "run", callbacks=[tp], val_sleep=0.5, max_epochs=2)
    wall = time.perf_counter() - t0
    assert tp.images == 2 * N
    assert tp.val_seconds >= 2 * 2 * 0.5  # 2 epochs x 2 validation batches x 0.5 s
    assert tp.seconds <= wall - tp.val_seconds
    assert tp.seconds < wall - 1.9  # the sleeps are not training time
    assert tp.images_per_s == pytest.approx(tp.images / tp.seconds)
