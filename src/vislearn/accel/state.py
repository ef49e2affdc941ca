"""Per-run state of a cache: what each block keeps between steps (:class:`BlockCache`) and
the state of one sampling run (:class:`RunState`, started by :func:`new_run`).

Runs and state: a run is a sequence of model calls. A new run starts (all caches dropped, the
step counter and the random generator reset) at ``DuCaCache.reset``, at the first call after
``DuCaCache.enable``, when the input shape changes, after ``num_steps`` calls when the run length
is known (``num_steps=`` or ``scheduler=``), when the scheduler's ``timesteps`` were set anew
(``set_timesteps``, as every pipeline does at its start), and -- only when the run length is
unknown -- when a timestep held on the host (a Python number or a CPU tensor) goes up from one
call to the next. No call reads a device tensor on the host: the step index is the number of
model calls since the run started (batched CFG, one call per model evaluation, as the diffusers
DiT and PixArt pipelines do), and ``cfg="auto"`` keeps its answer on the device (a 0-d bool
tensor, :attr:`RunState.cfg`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vislearn.accel.config import CacheConfig
from vislearn.accel.schedule import StepPlanner, StepType
from vislearn.core.errors import VislearnError

__all__ = ["BlockCache", "RunState", "new_run"]


@dataclass
class BlockCache:
    """What one block keeps between steps (tensors are ``(B, N, C)`` unless noted)."""

    attn: torch.Tensor | None = None  # ungated self-attention output
    xattn: torch.Tensor | None = None  # cross-attention output
    mlp: torch.Tensor | None = None  # ungated feed-forward output
    vnorm: torch.Tensor | None = None  # (B, H, N) value norms of the last full step
    attn_cols: torch.Tensor | None = None  # (B, N) self-attention column sums (ToCa s1)
    xattn_probs: torch.Tensor | None = None  # (B, N, L) cross-attention map (ToCa s2)
    stale: dict[str, torch.Tensor] = field(default_factory=dict)  # module -> (B, N) int32
    indices: dict[str, torch.Tensor] = field(default_factory=dict)  # last fresh indices
    planned: bool = False  # selections of this cycle chosen at the refresh (RunState.sel)
    ctx_mlp: torch.Tensor | None = None  # FLUX double blocks: text-stream feed-forward output
    ctx_len: int | None = None  # FLUX: text tokens at the last full step

    @property
    def ready(self) -> bool:
        return self.attn is not None and self.mlp is not None


@dataclass
class RunState:
    """The state of one sampling run."""

    num_steps: int | None
    planner: StepPlanner
    blocks: list[BlockCache]
    generator: torch.Generator
    cfg: bool | torch.Tensor  # a 0-d bool tensor on the device with cfg="auto"
    grid: tuple[int, int] | None
    shape: tuple[int, ...]
    step: int = -1
    types: tuple[StepType, StepType] = (StepType.FULL, StepType.FULL)
    history: list[StepType] = field(default_factory=list)
    final: torch.Tensor | None = None
    last_timestep: float | None = None
    timesteps: object = None  # the scheduler's ``timesteps`` at the start of the run
    fresh_tokens: int = 0
    partial_tokens: int = 0
    # (call, block, module) -> fresh indices (B, k), chosen for a whole cycle at the refresh
    sel: dict[tuple[int, int, str], torch.Tensor] = field(default_factory=dict)
    refreshed: list[int] = field(default_factory=list)  # blocks computed fully in this call
    modulation: list | None = None  # this call's adaLN parameters per block (cached steps)


def new_run(
    config: CacheConfig, model: nn.Module, num_steps: int | None, x: torch.Tensor
) -> RunState:
    """A fresh run for input ``x`` (the model's ``hidden_states``): no cached tensors, step
    counter at -1, the random generator seeded from the policy, CFG detected or checked."""
    p = config.policy
    cfg = p.cfg
    if cfg == "auto":
        b = x.shape[0]
        # on the device: no host sync (read it with bool(state.cfg) outside a call)
        cfg = (x[: b // 2] == x[b // 2 :]).all() if b >= 2 and b % 2 == 0 else False
    elif cfg and x.shape[0] % 2:
        raise VislearnError(f"cfg=True needs an even batch, got {x.shape[0]}")
    grid = None
    patch = getattr(getattr(model, "config", None), "patch_size", None)
    if x.ndim == 4 and isinstance(patch, int) and patch > 0:
        grid = (x.shape[-2] // patch, x.shape[-1] // patch)
    gen = torch.Generator(device=x.device)
    gen.manual_seed(int(p.seed))
    return RunState(
        num_steps=num_steps,
        planner=StepPlanner(p, num_steps),
        blocks=[BlockCache() for _ in config.score_source],
        generator=gen,
        cfg=cfg if torch.is_tensor(cfg) else bool(cfg),
        grid=grid,
        shape=tuple(x.shape),
    )
