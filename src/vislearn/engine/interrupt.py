"""SIGTERM / SIGINT during a fit: save ``last.ckpt`` at the current step and exit.

:func:`vislearn.engine.run.fit` installs :class:`GracefulStop`'s handlers for the whole fit.
A signal only raises a flag; the run stops at the next point where its state is complete
and Lightning knows how to resume from:

* after a training batch that is not the last of its epoch (once the module's own
  ``on_train_batch_end`` ran), or
* at the end of the epoch (after validation, the module's ``on_train_epoch_end`` and the
  epoch's checkpoint), when the signal came during the last batch or the validation.

There it writes ``last.ckpt`` atomically (with the data loader's position, so a resume
continues mid-epoch with the next batch) and raises; ``fit`` then prints one line and raises
:class:`RunInterrupted`, a ``SystemExit`` with status 128 + the signal number (143 for
SIGTERM, 130 for SIGINT). A second Ctrl-C stops at once (``KeyboardInterrupt``), without a
checkpoint of the current step.

Lightning installs its own SIGTERM handler, which raises ``SIGTERMException`` at a loop
boundary of its choosing (and saves nothing); :class:`GracefulStop` puts its handler back when
training starts, so one rule decides in every run. With several processes, the ranks agree on
the stop at every batch (one all-reduce of a flag), so they save the same step.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from vislearn.engine.trainer import AtomicCheckpoint, save_atomic

__all__ = ["GracefulStop", "RunInterrupted"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(SystemExit):
    """A fit stopped by a signal after saving its checkpoint; exits with 128 + ``signum``."""

    def __init__(self, signum: int, step: int, path: Path) -> None:
        super().__init__(128 + int(signum))
        self.signum, self.step, self.path = int(signum), int(step), Path(path)

    @property
    def message(self) -> str:
        name = signal.Signals(self.signum).name
        return (
            f"vislearn: interrupted by {name} at step {self.step}; checkpoint saved to "
            f"{self.path}; rerun the same command to resume"
        )


class StopRun(Exception):
    """Raised out of the training loop once the checkpoint is written."""


class GracefulStop(Checkpoint):
    """Turns SIGTERM / SIGINT into a checkpoint and a clean stop (see the module docstring).

    A :class:`~lightning.pytorch.callbacks.Checkpoint` so that Lightning calls it after the
    module's own epoch-end hook and after :class:`~vislearn.engine.trainer.AtomicCheckpoint`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.signum: int | None = None
        self.step: int | None = None  # the step saved, once stopped
        self._previous: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None

    # ---- handlers ----------------------------------------------------------------------
    def install(self) -> None:
        """Catch SIGTERM / SIGINT from now until :meth:`uninstall` (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
        self._listen()

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _listen(self) -> None:
        if self._previous:
            for signum in SIGNALS:
                signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if self.signum is None:
            self.signum = int(signum)
            launcher = self._trainer.strategy.launcher if self._trainer is not None else None
            if launcher is not None and hasattr(launcher, "kill"):
                launcher.kill(signum)  # processes Lightning started get it too

    # ---- stopping points ---------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer = trainer
        self._listen()  # replaces Lightning's SIGTERM handler, installed when fit started

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if batch_idx + 1 >= trainer.num_training_batches or not self._stopping(trainer):
            return  # the last batch of an epoch stops at the epoch end
        # The module's hook (an EMA update, ...) belongs to this step: run it before saving;
        # Lightning will not, as the loop stops here.
        pl_module.on_train_batch_end(outputs, batch, batch_idx)
        self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stopping(trainer):
            self._stop(trainer)

    def _stopping(self, trainer: L.Trainer) -> bool:
        stop = self.signum is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
            if stop and self.signum is None:
                self.signum = int(signal.SIGTERM)
        return stop

    def _stop(self, trainer: L.Trainer) -> None:
        save_atomic(trainer, self.path)
        self.step = trainer.global_step
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, AtomicCheckpoint) and cb.last_path == self.path:
                cb._last_global_step_saved = trainer.global_step
        raise StopRun

    def interrupted(self, signum: int | None = None) -> RunInterrupted:
        return RunInterrupted(signum or self.signum or signal.SIGTERM, self.step or 0, self.path)
