"""TrainModule (non-finite check, warm-up, schedules, RNG streams in checkpoints) and the one
run function ``engine.run.fit`` (config saved, resume, last step kept, export on rank 0)."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from vislearn.core.errors import VislearnError
from vislearn.engine.module import TrainModule
from vislearn.engine.run import fit, last_checkpoint
from vislearn.ops.optim import lr_lambda


def numpy_multiplier(schedule: str, step: int, total: int, warmup: int, final=0.0, power=0.9):
    """The schedules written out from their definitions (independent of ops.optim)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    p = np.clip((step - warmup) / max(1, total - warmup), 0.0, 1.0)
    if schedule == "poly":
        return float((1 - p) ** power)
    return float(final + (1 - final) * (1 + np.cos(np.pi * p)) / 2)


@pytest.mark.parametrize("schedule", ["cosine", "poly", "constant"])
@pytest.mark.parametrize("warmup", [0, 3])
def test_lr_lambda_matches_numpy(schedule, warmup):
    fn = lr_lambda(schedule, 20, warmup, final_ratio=0.1, power=0.9)
    for step in range(25):
        expected = numpy_multiplier(schedule, step, 20, warmup, 0.1 if schedule == "cosine" else 0)
        assert fn(step) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(VislearnError, match="unknown lr schedule"):
        lr_lambda("step", 10)


class Tiny(TrainModule):
    """A linear regressor with a private generator (noise added to every batch)."""

    def __init__(self, lr: float = 0.1, warmup_epochs: float = 0.0, schedule: str = "cosine"):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(4, 1)
        self.noise = torch.Generator().manual_seed(7)
        self.drawn: list[float] = []

    def rng_generators(self) -> dict[str, torch.Generator]:
        return {"noise_rng": self.noise}

    def training_step(self, batch, batch_idx):
        x, y = batch
        eps = torch.randn(x.shape, generator=self.noise)
        self.drawn.append(float(eps[0, 0]))
        return self.check_finite(torch.nn.functional.mse_loss(self.net(x + 0.01 * eps), y))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        warmup = self.warmup_steps_of(epochs=self.hparams.warmup_epochs)
        return self.schedule(opt, self.hparams.schedule, warmup)


class Data(L.LightningDataModule):
    def __init__(self, n: int = 32, batch: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 4, generator=g)
        self.set = TensorDataset(x, x.sum(1, keepdim=True))
        self.batch = batch

    def train_dataloader(self):
        return DataLoader(self.set, batch_size=self.batch, shuffle=False)


TRAINER = {"accelerator": "cpu", "devices": 1, "progress": False, "log_every_n_steps": 1}


def _fit(out, module, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(module, Data(), out, {**TRAINER, **kw.pop("trainer", {})}, **kw)


def test_check_finite_one_line_error():
    m = Tiny()
    assert m.check_finite(torch.tensor(1.5)) == 1.5
    with pytest.raises(VislearnError, match=r"^loss is nan at step 0; lower") as err:
        m.check_finite(torch.tensor(float("nan")))
    assert "\n" not in str(err.value)


def test_warmup_in_epochs_becomes_steps_and_both_units_are_rejected(tmp_path):
    m = Tiny(warmup_epochs=1.5)
    run = _fit(tmp_path, m, trainer={"max_epochs": 2})
    assert m.total_steps == 8 and m.warmup_steps_of(epochs=1.5) == 6  # 4 steps per epoch
    lrs = run.trainer.lr_scheduler_configs[0].scheduler
    assert lrs.last_epoch == 8
    with pytest.raises(VislearnError, match="not both"):
        m.warmup_steps_of(steps=2, epochs=1.0)


def test_fit_saves_config_exports_and_resumes_equal_to_uninterrupted(tmp_path):
    exported = []
    torch.manual_seed(0)
    full = Tiny(schedule="constant")  # the cut run's first part has another length
    _fit(tmp_path / "full", full, trainer={"max_epochs": 3}, config={"seed": 0, "x": [1, 2]},
         export=lambda out: exported.append(out))  # fmt: skip
    assert yaml.safe_load((tmp_path / "full" / "config.yaml").read_text()) == {
        "seed": 0,
        "x": [1, 2],
    }
    assert exported == [tmp_path / "full"]

    torch.manual_seed(0)  # the same initial weights
    first = Tiny(schedule="constant")
    _fit(tmp_path / "cut", first, trainer={"max_epochs": 1})
    assert last_checkpoint(tmp_path / "cut").is_file()
    second = Tiny(schedule="constant")  # a new process builds the module afresh
    run = _fit(tmp_path / "cut", second, trainer={"max_epochs": 3})
    assert run.resumed
    # the noise generator continued where it stopped: the same draws as the full run
    assert first.drawn + second.drawn == full.drawn
    for a, b in zip(full.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_last_checkpoint_holds_the_final_step_of_a_max_steps_run(tmp_path):
    _fit(tmp_path, Tiny(), trainer={"max_epochs": -1, "max_steps": 6})  # stops mid-epoch 2
    ckpt = torch.load(last_checkpoint(tmp_path), weights_only=False)  # our own file
    assert ckpt["global_step"] == 6 and "noise_rng" in ckpt


def test_checkpoint_every_n_steps(tmp_path):
    steps = []

    class Spy(Tiny):
        def on_save_checkpoint(self, checkpoint):
            super().on_save_checkpoint(checkpoint)
            steps.append(self.global_step)

    _fit(tmp_path, Spy(), trainer={"max_epochs": 1, "checkpoint_every_n_steps": 2})
    assert steps == [2, 4]  # every 2 steps; the last (4) is not written twice


def test_resume_into_a_folder_of_another_model_is_one_line(tmp_path):
    _fit(tmp_path, Tiny(), trainer={"max_epochs": 1})

    class Wider(Tiny):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).sum()

    with pytest.raises(VislearnError, match="does not match this model"):
        _fit(tmp_path, Wider(), trainer={"max_epochs": 2})
