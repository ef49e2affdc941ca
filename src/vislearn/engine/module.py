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
  the same numbers as an uninterrupted one. The global streams (torch CPU and CUDA of every
  rank; Python's ``random`` and NumPy's on one process) travel in the checkpoint as well
  (``checkpoint["global_rng"]``), for what draws from them (dropout, ``torch.randperm``).

Parameter groups without weight decay on biases and norms are
:func:`vislearn.ops.optim.param_groups`. Subclasses: :class:`~vislearn.engine.ssl.SSLMethod`
(every self-supervised method), the segmentation modules, ``UVOSModule`` and the DiT trainer.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
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

    #: train with 4-D parameters (convolutions) in channels-last memory format (see
    #: :meth:`setup`); a subclass turns it on, SSLMethod through its ``channels_last`` argument
    channels_last: bool = False

    # ---- loss check ---------------------------------------------------------------------
    def check_finite(self, loss: Tensor) -> Tensor:
        """``loss``, or a one-line :class:`VislearnError` when it is NaN or infinite.

        On the CPU the check is immediate. On an accelerator it would be a host sync every
        step, so the flag of this step is kept on the device and read at the next call (by
        then long computed): the run stops one step later, naming the step of the bad loss.
        """
        pending = getattr(self, "_finite_pending", None)
        if pending is not None:
            self._finite_pending = None
            self._raise_if_not_finite(*pending)
        if loss.device.type == "cpu":
            self._raise_if_not_finite(loss.detach(), self.global_step)
        else:
            self._finite_pending = (loss.detach(), self.global_step)
        return loss

    def _raise_if_not_finite(self, loss: Tensor, step: int) -> None:
        if not torch.isfinite(loss):
            raise VislearnError(
                f"{self.loss_name} is {loss.item()} at step {step}; {self.loss_hint}"
            )

    def on_train_epoch_end(self) -> None:
        pending = getattr(self, "_finite_pending", None)
        if pending is not None:
            self._finite_pending = None
            self._raise_if_not_finite(*pending)

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
        if stage == "fit" and self.channels_last:
            self.to_memory_format(torch.channels_last)

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self.channels_last:  # exports and evaluation see plain tensors
            self.to_memory_format(torch.contiguous_format)

    def to_memory_format(self, memory_format: torch.memory_format) -> None:
        """Put every 4-D parameter and buffer (and gradient) into ``memory_format`` in place
        (the same ``Parameter`` objects, so optimisers keep their references). Channels-last
        convolutions are ~1.5x faster on the CPU (oneDNN) and use tensor cores' NHWC
        kernels on GPUs; the values are unchanged, the sums of the convolutions are ordered
        differently (results equal to float rounding, not bitwise)."""
        for t in (*self.parameters(), *self.buffers()):
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=memory_format)
                if t.grad is not None:
                    t.grad = t.grad.contiguous(memory_format=memory_format)

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run (cached: Lightning re-derives it on each call);
        1 outside a trainer."""
        if getattr(self, "_total_steps", None) is None:
            trainer = self._trainer
            if trainer is None:
                self._total_steps = 1
                return 1
            # a real trainer that has not built its training loader yet
            early = isinstance(trainer, L.Trainer) and trainer.train_dataloader is None
            self._total_steps = max(1, int(trainer.estimated_stepping_batches))
            if early:
                _forget_train_loader(trainer)
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
        checkpoint["global_rng"] = self._global_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for key, generator in self.rng_generators().items():
            if key in checkpoint:
                generator.set_state(checkpoint[key])
        state = checkpoint.get("global_rng")
        if state:
            self._set_global_rng_state(state)

    def _world_rank(self) -> tuple[int, int]:
        trainer = self._trainer
        return (trainer.world_size, trainer.global_rank) if trainer else (1, 0)

    def _global_rng_state(self) -> dict[str, Any]:
        """Global random streams; torch's of every rank (gathered: a checkpoint is written
        by rank 0 only)."""
        world, _ = self._world_rank()
        streams = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            streams["cuda"] = torch.cuda.get_rng_state()
        if world > 1:
            streams = {
                k: self.all_gather(v.to(self.device)).cpu().reshape(world, -1)
                for k, v in streams.items()
            }
        else:
            streams = {k: v[None] for k, v in streams.items()}
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            **streams,
            "world": world,
            "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        }

    def _set_global_rng_state(self, state: dict[str, Any]) -> None:
        world, rank = self._world_rank()
        if state.get("world") != world:
            return  # another layout: the streams cannot be matched to the ranks
        torch.set_rng_state(state["torch"][rank].clone())
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"][rank].clone())
        if world == 1:
            random.setstate(state["python"])
            kind, keys, pos, has_gauss, gauss = state["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _forget_train_loader(trainer: L.Trainer) -> None:
    """Drop the training loader Lightning built (and started iterating) to count the steps,
    before a checkpoint was restored: the fit builds it again once the loop state -- with
    the loader's position -- is loaded, so a resumed run continues at the right batch of the
    right epoch (Lightning would otherwise keep this one, ordered for epoch 0 and one batch
    already prefetched)."""
    loop = trainer.fit_loop
    fetcher = getattr(loop, "_data_fetcher", None)
    if fetcher is not None:
        fetcher.teardown()
        loop._data_fetcher = None
    loop._combined_loader = None
