"""Settings of one :class:`~vislearn.accel.apply.DuCaCache`, fixed when it is built: the
policy (:class:`~vislearn.accel.schedule.CachePolicy`), the block types and attention
processors the hooks accept, and what each block's attention processors must record for the
token score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from vislearn.accel.schedule import CachePolicy
from vislearn.core.errors import VislearnError

__all__ = [
    "REPLACEABLE_PROCESSORS",
    "SUPPORTED_NORMS",
    "CacheConfig",
    "UnsupportedModelError",
    "resolve_num_steps",
]

#: ``norm_type`` values of diffusers ``BasicTransformerBlock`` that the block hooks handle.
SUPPORTED_NORMS = ("ada_norm_zero", "ada_norm_single", "layer_norm")
#: Attention processors that may be swapped for the recording
#: :class:`~vislearn.accel.processor.CachingAttnProcessor`.
REPLACEABLE_PROCESSORS = (
    "AttnProcessor2_0",
    "AttnProcessor",
    "XFormersAttnProcessor",
    "AttnProcessorNPU",
    "CachingAttnProcessor",
)


class UnsupportedModelError(VislearnError):
    """The model cannot be cached (raised with a one-line reason)."""


@dataclass(frozen=True)
class CacheConfig:
    """The fixed settings of one cache.

    Attributes:
        policy: the step schedule and token selection.
        score_source: per block, ``"cross"`` when the ``attention`` score reads its
            cross-attention map (blocks with cross-attention, ToCa s2), else ``"self"``.
        needs_vnorm: full steps record self-attention value norms (``vnorm`` scores).
        needs_probs: full steps record attention maps (``attention`` score).
    """

    policy: CachePolicy
    score_source: tuple[str, ...]
    needs_vnorm: bool
    needs_probs: bool

    @classmethod
    def build(cls, policy: CachePolicy, blocks: Sequence[nn.Module]) -> CacheConfig:
        """The settings of ``policy`` applied to ``blocks``."""
        p = policy
        score_source = tuple(
            "cross"
            if (
                getattr(b, "attn2", None) is not None
                and getattr(b.attn2, "is_cross_attention", False)
            )
            else "self"
            for b in blocks
        )
        return cls(
            policy=p,
            score_source=score_source,
            needs_vnorm=p.score in ("vnorm", "vnorm_high") and p.method in ("toca", "duca"),
            needs_probs=p.score == "attention" and p.method in ("toca", "duca"),
        )


def resolve_num_steps(num_steps: int | None, scheduler: Any) -> int | None:
    """Model calls per run: the length of ``scheduler.timesteps`` when a scheduler with
    timesteps is given (read at the start of every run: one model call per entry, so a Heun
    run of N steps plans its 2 N - 1 calls), else ``num_steps``, else ``None``."""
    ts = getattr(scheduler, "timesteps", None)
    if ts is not None:
        return len(ts)
    return int(num_steps) if num_steps is not None else None
