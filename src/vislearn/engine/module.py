"""``TrainModule``: the LightningModule every vislearn trainer derives from.

What each task used to write for itself lives here once:

* :meth:`TrainModule.check_finite`: a non-finite loss stops the run with one line naming the
  step, instead of training on NaNs.
* :attr:`TrainModule.total_steps` and :meth:`TrainModule.warmup_steps_of`: the run length in
  optimiser steps, and a warm-up given in steps or (possibly fractional) epochs converted to
  steps.
* :meth:`TrainModule.schedule`: the per-step learning-rate schedule of
  :func:`vislearn.ops.optim.lr_lambda` (``cosine`` / ``poly`` / ``constant``, linear warm-up)
  in Lightning's ``lr_scheduler`` form.
* :meth:`TrainModule.rng_generators`: every private ``torch.Generator`` a module draws from
  (augmentation, mixing) is saved into and restored from checkpoints, so a resumed run draws
  the same numbers as an uninterrupted one.

Parameter groups without weight decay on biases and norms are
:func:`vislearn.ops.optim.param_groups`. Subclasses: :class:`~vislearn.engine.ssl.SSLMethod`
(every self-supervised method), the segmentation modules, ``UVOSModule`` and the DiT trainer.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.profiler import record_function

from vislearn.core.errors import VislearnError
from vislearn.ops.optim import step_scheduler

__all__ = ["TrainModule"]


class TrainModule(L.LightningModule):
    """LightningModule with vislearn's shared training behaviour (see the module docstring)."""

    #: what the non-finite-loss message names ("loss", "SSL-UVOS loss", ...)
    loss_name: str = "loss"
    #: the hint appended to that message
    loss_hint: str = "lower the learning rate or check the input data"

    # ---- loss check ---------------------------------------------------------------------
    def check_finite(self, loss: Tensor) -> Tensor:
        """``loss``, or a one-line :class:`VislearnError` when it is NaN or infinite."""
        if not torch.isfinite(loss):
            raise VislearnError(
                f"{self.loss_name} is {loss.item()} at step {self.global_step}; {self.loss_hint}"
            )
        return loss

    # ---- profiler ranges of the optimisation step (benchmarks/profile_step.py) ----------
    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        with record_function("backward"):
            super().backward(loss, *args, **kwargs)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Lightning runs training_step + backward inside the optimiser's closure: the profile
        # counts the optimiser as this range minus those two
        with record_function("optimizer_step"):
            super().optimizer_step(*args, **kwargs)

    # ---- run length and schedules -------------------------------------------------------
    def setup(self, stage: str) -> None:
        self._total_steps = None  # a new fit may have a different length

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run (cached: Lightning re-derives it on each call);
        1 outside a trainer."""
        if getattr(self, "_total_steps", None) is None:
            trainer = self._trainer
            self._total_steps = max(1, int(trainer.estimated_stepping_batches)) if trainer else 1
        return self._total_steps

    def warmup_steps_of(self, steps: int = 0, epochs: float = 0.0) -> int:
        """A warm-up length in optimiser steps: ``steps``, or ``epochs`` (may be fractional)
        converted with the run's steps per epoch. Give one of the two."""
        if steps and epochs:
            raise VislearnError("give the warm-up in steps or in epochs, not both")
        if epochs:
            max_epochs = self._trainer.max_epochs if self._trainer else None
            return int(epochs * self.total_steps / max(1, max_epochs or 1))
        return int(steps)

    def schedule(
        self,
        optimizer: torch.optim.Optimizer,
        name: str = "cosine",
        warmup: int = 0,
        final_ratio: float = 0.0,
        power: float = 0.9,
    ) -> dict[str, Any]:
        """``{"optimizer", "lr_scheduler"}`` for ``configure_optimizers``: ``name`` over
        :attr:`total_steps`, stepped every optimiser step, after ``warmup`` steps."""
        sched = step_scheduler(optimizer, name, self.total_steps, warmup, final_ratio, power)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- random streams in checkpoints --------------------------------------------------
    def rng_generators(self) -> dict[str, torch.Generator]:
        """Checkpoint key -> a ``torch.Generator`` the module draws from (none by default)."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for key, generator in self.rng_generators().items():
            checkpoint[key] = generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for key, generator in self.rng_generators().items():
            if key in checkpoint:
                generator.set_state(checkpoint[key])
