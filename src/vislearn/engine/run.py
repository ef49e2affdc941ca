"""One fit / resume / export function for every vislearn command.

:func:`fit` is what ``pretrain``, ``seg pretrain|finetune``, ``train-uvos`` and ``dit train``
all do once their module and data exist: write the resolved config into the run folder, build
the trainer (TensorBoard + CSV logs, an atomic ``checkpoints/last.ckpt`` every epoch or every
N steps and at the last step), resume from ``last.ckpt`` when the same command is run again,
and export the artefacts at the end (on rank 0 only).

A run survives its user:

* SIGTERM / SIGINT save ``last.ckpt`` at the current step (with the data loader's position
  and every random stream) and exit with 143 / 130 after one line on stderr
  (:mod:`vislearn.engine.interrupt`); rerunning the command continues exactly where it
  stopped, mid-epoch included.
* A resume checks first that the run folder holds the same run (``run_keys``: the dotted
  config keys that define it, compared with the folder's ``config.yaml``) and a readable
  ``last.ckpt``; either failing is a one-line :class:`VislearnError` and nothing in the
  folder changes.
* ``csv/metrics.csv`` keeps the rows of the earlier attempts.
* Every checkpoint records the resolved config: ``checkpoint["vislearn"]["config"]``.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from vislearn.core.config import save_config
from vislearn.core.errors import VislearnError
from vislearn.core.utils import LIGHTNING_NOTICES, ignore_warnings
from vislearn.engine.interrupt import GracefulStop, RunInterrupted, StopRun
from vislearn.engine.trainer import ResumableCSVLogger, build_trainer

__all__ = [
    "QUIET",
    "FitResult",
    "RunInterrupted",
    "check_resume",
    "fit",
    "last_checkpoint",
    "quiet_lightning",
]

#: Lightning messages that are expected in vislearn runs and say nothing to the user
QUIET = (*LIGHTNING_NOTICES, ".*val_dataloader.*", ".*validation_step.*", ".*Total length of.*")


def quiet_lightning() -> None:
    """Silence the :data:`QUIET` warnings for the rest of the process (evaluation after a
    fit prints the same ones)."""
    ignore_warnings(QUIET)


def last_checkpoint(out: str | os.PathLike) -> Path:
    """``<out>/checkpoints/last.ckpt``: where every run keeps its resumable state."""
    return Path(out) / "checkpoints" / "last.ckpt"


class RunRecord(Callback):
    """Stores the resolved run config in every checkpoint: ``checkpoint["vislearn"] =
    {"config": config}`` (what ``eval`` / ``embed`` read to name the training data)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = _plain(dict(config))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["vislearn"] = {"config": self.config}


_UNSET = object()


def _plain(value: Any) -> Any:
    """``value`` as YAML would give it back (tuples as lists, mappings as dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _lookup(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _UNSET
        node = node[part]
    return _plain(node)


def check_resume(
    out: str | os.PathLike, config: Mapping[str, Any] | None, run_keys: Iterable[str] = ()
) -> None:
    """Raise a one-line :class:`VislearnError` when the run folder ``out`` (about to be
    resumed from its ``last.ckpt``) holds another run -- its ``config.yaml`` differs from
    ``config`` on one of ``run_keys`` (dotted keys, e.g. ``"model.backbone"``) -- or when its
    ``last.ckpt`` cannot be read. Reads only; changes nothing."""
    out = Path(out)
    last = last_checkpoint(out)
    stored_path = out / "config.yaml"
    keys = list(run_keys)
    if keys and config is not None and stored_path.is_file():
        try:
            stored = yaml.safe_load(stored_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise VislearnError(f"cannot read {stored_path} to resume the run: {exc}") from None
        for key in keys:
            old, new = _lookup(stored, key), _lookup(config, key)
            if old != new:
                show = lambda v: "unset" if v is _UNSET else repr(v)  # noqa: E731
                raise VislearnError(
                    f"{out} holds another run: {key} is {show(old)} there but {show(new)} now; "
                    "rerun with --no-resume to start over in that folder, or choose another --out"
                )
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
        ok = isinstance(ckpt, dict) and "state_dict" in ckpt
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is the same user error
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        ok = False
    else:
        reason = "no model state in it"
    if not ok:
        raise VislearnError(
            f"cannot resume from {last}: the checkpoint is damaged ({reason}); delete it or "
            "rerun with --no-resume to start over, or choose another --out"
        )


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
    run_keys: Iterable[str] = (),
    callbacks: Iterable[Callback] = (),
    export: Callable[[Path], Any] | None = None,
    quiet: Iterable[str] = (),
) -> FitResult:
    """Train ``module`` on ``datamodule`` into the run folder ``out``.

    Args:
        trainer: :func:`~vislearn.engine.trainer.build_trainer` arguments (``max_epochs`` or
            ``max_steps``, ``devices``, ``precision``, ``checkpoint_every_n_steps``, ...), or a
            trainer already built by it (when the caller needs e.g. its world size first).
        config: the resolved run config, saved as ``out/config.yaml`` before training and
            into every checkpoint (``checkpoint["vislearn"]["config"]``).
        resume: continue from ``out/checkpoints/last.ckpt`` when it exists (rerunning a
            command resumes it); ``False`` starts over.
        run_keys: dotted ``config`` keys that define the run (``"method"``,
            ``"model.backbone"``, ``"data.dataset"``, ...): a resume whose config differs from
            the folder's ``config.yaml`` on one of them is an error (:func:`check_resume`).
        callbacks: extra Lightning callbacks (when ``trainer`` is given as arguments).
        export: called with ``out`` on rank 0 after training (e.g. writes the weights file).
        quiet: extra warning patterns to silence besides :data:`QUIET`.

    Raises:
        RunInterrupted: (a ``SystemExit``, status 143 / 130) after SIGTERM / SIGINT, once
            ``last.ckpt`` holds the current step.
    """
    out = Path(out)
    last = last_checkpoint(out)
    ckpt_path = str(last) if resume and last.is_file() else None
    if ckpt_path:
        check_resume(out, config, run_keys)  # before anything in the folder changes
    out.mkdir(parents=True, exist_ok=True)
    extra = [GracefulStop(last)]
    if config is not None:
        extra.append(RunRecord(config))
    if isinstance(trainer, L.Trainer):
        pl_trainer = trainer
        pl_trainer.callbacks.extend(extra)
    else:
        kwargs = dict(trainer or {})
        pl_trainer = build_trainer(out, callbacks=[*callbacks, *extra], **kwargs)
    stop = extra[0]
    for logger in pl_trainer.loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.append = ckpt_path is not None
    if config is not None and pl_trainer.is_global_zero:
        save_config(dict(config), out / "config.yaml")
    if ckpt_path and pl_trainer.is_global_zero:
        print(f"vislearn: resuming from {last}")
    t0 = time.perf_counter()
    stop.install()
    try:
        with warnings.catch_warnings():
            ignore_warnings((*QUIET, *quiet))
            try:
                pl_trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            except StopRun:
                _interrupted(pl_trainer, stop.interrupted())
            except RuntimeError as exc:
                if ckpt_path and "state_dict" in str(exc):
                    raise VislearnError(
                        f"{last} does not match this model ({str(exc).splitlines()[0][:200]}); "
                        "use another output folder or start over with resume disabled"
                    ) from None
                raise
        if stop.signum is not None:  # came after the last step: last.ckpt holds it
            stop.step = pl_trainer.global_step
            _interrupted(pl_trainer, stop.interrupted())
    finally:
        stop.uninstall()
    seconds = time.perf_counter() - t0
    if export is not None and pl_trainer.is_global_zero:
        export(out)
    return FitResult(pl_trainer, ckpt_path is not None, seconds)


def _interrupted(trainer: L.Trainer, exc: RunInterrupted) -> None:
    if trainer.is_global_zero:
        print(exc.message, file=sys.stderr, flush=True)
    raise exc from None
