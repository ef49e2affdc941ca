"""One fit / resume / export function for every vislearn command.

:func:`fit` is what ``pretrain``, ``seg pretrain|finetune``, ``train-uvos`` and ``dit train``
all do once their module and data exist: write the resolved config into the run folder, build
the trainer (TensorBoard + CSV logs, an atomic ``checkpoints/last.ckpt`` every epoch or every
N steps and at the last step), resume from ``last.ckpt`` when the same command is run again,
and export the artefacts at the end (on rank 0 only).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from vislearn.core.config import save_config
from vislearn.core.errors import VislearnError
from vislearn.engine.trainer import build_trainer

__all__ = ["QUIET", "FitResult", "fit", "last_checkpoint", "quiet_lightning"]

#: Lightning messages that are expected in vislearn runs and say nothing to the user
QUIET = (
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",
    ".*val_dataloader.*",
    ".*validation_step.*",
    ".*LeafSpec.*",
    ".*Total length of.*",
)


def quiet_lightning() -> None:
    """Silence the :data:`QUIET` warnings for the rest of the process (evaluation after a
    fit prints the same ones)."""
    for pattern in QUIET:
        warnings.filterwarnings("ignore", message=pattern)


def last_checkpoint(out: str | os.PathLike) -> Path:
    """``<out>/checkpoints/last.ckpt``: where every run keeps its resumable state."""
    return Path(out) / "checkpoints" / "last.ckpt"


class FitResult:
    """What :func:`fit` returns: the trainer, whether it resumed, and the training seconds."""

    def __init__(self, trainer: L.Trainer, resumed: bool, seconds: float) -> None:
        self.trainer = trainer
        self.resumed = resumed
        self.seconds = seconds


def fit(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    out: str | os.PathLike,
    trainer: Mapping[str, Any] | L.Trainer | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    resume: bool = True,
    callbacks: Iterable[Callback] = (),
    export: Callable[[Path], Any] | None = None,
    quiet: Iterable[str] = (),
) -> FitResult:
    """Train ``module`` on ``datamodule`` into the run folder ``out``.

    Args:
        trainer: :func:`~vislearn.engine.trainer.build_trainer` arguments (``max_epochs`` or
            ``max_steps``, ``devices``, ``precision``, ``checkpoint_every_n_steps``, ...), or a
            trainer already built by it (when the caller needs e.g. its world size first).
        config: the resolved run config, saved as ``out/config.yaml`` before training.
        resume: continue from ``out/checkpoints/last.ckpt`` when it exists (rerunning a
            command resumes it); ``False`` starts over.
        callbacks: extra Lightning callbacks (when ``trainer`` is given as arguments).
        export: called with ``out`` on rank 0 after training (e.g. writes the weights file).
        quiet: extra warning patterns to silence besides :data:`QUIET`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(trainer, L.Trainer):
        pl_trainer = trainer
    else:
        pl_trainer = build_trainer(out, callbacks=list(callbacks), **dict(trainer or {}))
    if config is not None and pl_trainer.is_global_zero:
        save_config(dict(config), out / "config.yaml")
    last = last_checkpoint(out)
    ckpt_path = str(last) if resume and last.is_file() else None
    if ckpt_path and pl_trainer.is_global_zero:
        print(f"vislearn: resuming from {last}")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        for pattern in (*QUIET, *quiet):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            pl_trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except RuntimeError as exc:
            if ckpt_path and "state_dict" in str(exc):
                raise VislearnError(
                    f"{last} does not match this model ({str(exc).splitlines()[0][:200]}); "
                    "use another output folder or start over with resume disabled"
                ) from None
            raise
    seconds = time.perf_counter() - t0
    if export is not None and pl_trainer.is_global_zero:
        export(out)
    return FitResult(pl_trainer, ckpt_path is not None, seconds)
