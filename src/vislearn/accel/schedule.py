"""Step schedules and fresh-token ratios for DuCa, ToCa and FORA.

A sampling run is a sequence of model calls (one per sampler step with batched CFG). Each call
gets a :class:`StepType`:

``full``
    compute every block and refresh every cache;
``conservative``
    (``'ToCa'`` in the official code) reuse the cached self-attention output, recompute the MLP
    (and, on text-conditioned models, the cross-attention) for a few selected tokens only;
``aggressive``
    skip every transformer block and hand the last cached final hidden state to the output head;
``reuse``
    FORA: re-gate the cached attention / cross-attention / MLP outputs of every block, no tokens
    recomputed.

The cycle (DuCa: Zou et al., arXiv:2412.18911, and its official code release), which
classifies a step by the *code step* ``s`` and the current interval ``n``::

    full          if first step or s % n == 0
    conservative  elif (s % n) is odd
    aggressive    else

``s`` counts **down** in the released DiT code (DDIM, ``s = num_steps-1 ... 0``) and **up** in the
released PixArt-alpha code (DPM-Solver++, ``s = 0 ... 19``), so the order inside a cycle is
F, A, C, ... on DiT with N=3 but F, C, A on PixArt. Here step ``i`` is always the index of the
model call in the run (0, 1, ...); :attr:`CachePolicy.step_order` maps it to the code step
(``"up"``: ``s = i``; ``"down"``: ``s = num_steps - 1 - i``). The presets therefore work with any
scheduler whose number of model calls equals ``num_steps`` (DDIM, DPM-Solver++ multistep,
Euler); they *assume* the released samplers' ordering, nothing else.

Choices where the notes are unclear or the code is quirky (also in ``docs/RESULTS.md``):

* ``warmup``: the first ``warmup`` calls are full (official DiT/PixArt: 1; OpenSora: 3).
* Dynamic interval (released DiT code, ``force_scheduler``): at every full step
  ``n = round(N / (1 + w - 2 w s / num_steps))`` (Python/torch round-half-even) with ``w = 0.4``,
  and ``n = 2`` while ``s`` is in ``range(int(0.2 num_steps), int(0.4 num_steps))``. The rule is
  off when ``fresh_ratio == 0`` (the official FORA mode). ToCa-PixArt uses ``w = -0.2`` (the
  code writes ``1 - w' + 2 w' s/n`` with ``w' = 0.2``), DuCa-PixArt a static interval.
* The official code re-evaluates the step type in *every* block, after block 0 of a full step
  has already updated the interval. On DDIM-50, N=3 this turns steps 45 and 32 (code step) into
  "block 0 full, blocks 1.. conservative / aggressive". The documented schedule (20 F / 22 C /
  8 A) takes the type of block 0 (``CachePolicy`` default, and what step counts report);
  ``layer_quirk=True`` reproduces the per-block behaviour of the released code and is the
  default of the ``duca_dit`` / ``toca_dit`` presets.
* Fresh-ratio schedule ``"toca"`` (``fresh_ratio_scheduler``, branch ``'ToCa'``):
  ``r = fresh_ratio * (1 + ws - 2 ws s/num_steps) * (1 + wl - 2 wl l/(depth-1)) * module``
  with ``module = 1 + 0.6 wm`` for the MLP and ``1 - 0.4 wm`` for (cross-)attention, clamped to
  [0, 1]; ``/27`` of the code is generalised to ``/(depth-1)``. ``k = int(r * num_tokens)``.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

from vislearn.core.errors import VislearnError

__all__ = [
    "PRESETS",
    "CachePolicy",
    "StepPlanner",
    "StepType",
    "count_step_types",
    "fresh_ratio",
    "get_policy",
    "plan_steps",
    "step_types",
    "types_to_string",
]


class StepType(StrEnum):
    FULL = "full"
    CONSERVATIVE = "conservative"
    AGGRESSIVE = "aggressive"
    REUSE = "reuse"

    @property
    def letter(self) -> str:
        return {"full": "F", "conservative": "C", "aggressive": "A", "reuse": "R"}[self.value]


METHODS = ("none", "fora", "toca", "duca")
SCORES = ("vnorm", "vnorm_high", "attention", "random")


@dataclass(frozen=True)
class CachePolicy:
    """Everything that decides what a cached sampling run computes.

    Args:
        method: ``none`` (always full), ``fora`` (full every ``interval`` calls, ``reuse``
            between), ``toca`` (full / conservative), ``duca`` (full / conservative / aggressive).
        interval: the cache interval N (``fresh_threshold`` of the official code).
        warmup: number of leading full calls (>= 1).
        step_order: how the code step ``s`` counts, ``"up"`` (PixArt) or ``"down"`` (DiT).
        interval_weight: ``w`` of the dynamic interval (0 = static interval).
        sensitive_band: ``(lo, hi, n)``: full steps with ``s`` in ``range(int(lo T), int(hi T))``
            set the interval to ``n`` (released DiT: ``(0.2, 0.4, 2)``).
        layer_quirk: re-evaluate the type per block after block 0 updated the interval, as the
            released code does (see the module docstring).
        fresh_ratio: base fraction of tokens recomputed on conservative steps.
        ratio_schedule: ``"constant"`` or ``"toca"`` (step x layer x module factors).
        ratio_weights: ``(step, layer, module)`` weights of the ``"toca"`` schedule.
        score: token score: ``"vnorm"`` (official V-caching: ``normalize(sum_heads(1 - |v|))``,
            i.e. tokens with the *smallest* value norm are recomputed), ``"vnorm_high"`` (largest
            norm first), ``"attention"`` (ToCa: self-attention column sums s1 on blocks without
            cross-attention, cross-attention entropy s2 on blocks with it), ``"random"`` (DuCa
            v2).
        staleness_weight: lambda3 of ToCa's s3, ``score += l3 * stale_count / interval``.
        bonus_ratio, bonus_grid: ToCa's s4: in every ``g x g`` patch of the token grid the
            best-scoring token's score is multiplied by ``1 + bonus_ratio`` (0 disables it).
        cross_attention: on conservative steps, ``"partial"`` recomputes the selected query rows
            of the cross-attention (released PixArt code), ``"reuse"`` reuses it whole
            (released OpenSora code).
        cfg: ``"auto"`` shares the token choice between the two batch halves when the model's
            input halves are identical at the first call of a run (batched classifier-free
            guidance); ``True`` / ``False`` force it.
        seed: seed of the random score generator, re-seeded at every run.
    """

    method: str = "duca"
    interval: int = 3
    warmup: int = 1
    step_order: str = "up"
    interval_weight: float = 0.0
    sensitive_band: tuple[float, float, int] | None = None
    layer_quirk: bool = False
    fresh_ratio: float = 0.3
    ratio_schedule: str = "constant"
    ratio_weights: tuple[float, float, float] = (0.0, 0.0, 0.0)
    score: str = "vnorm"
    staleness_weight: float = 0.25
    bonus_ratio: float = 0.8
    bonus_grid: int = 2
    cross_attention: str = "partial"
    cfg: str | bool = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise VislearnError(f"cache policy: {msg}")

        if self.method not in METHODS:
            bad(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if int(self.interval) < 1:
            bad(f"interval must be >= 1, got {self.interval}")
        if int(self.warmup) < 1:
            bad(f"warmup must be >= 1 (the first call fills the cache), got {self.warmup}")
        if self.step_order not in ("up", "down"):
            bad(f"step_order must be 'up' or 'down', got {self.step_order!r}")
        if self.ratio_schedule not in ("constant", "toca"):
            bad(f"ratio_schedule must be 'constant' or 'toca', got {self.ratio_schedule!r}")
        if self.score not in SCORES:
            bad(f"unknown score {self.score!r}; choose one of {', '.join(SCORES)}")
        if self.cross_attention not in ("partial", "reuse"):
            bad(f"cross_attention must be 'partial' or 'reuse', got {self.cross_attention!r}")
        if self.cfg not in ("auto", True, False):
            bad(f"cfg must be 'auto', True or False, got {self.cfg!r}")
        if float(self.fresh_ratio) < 0.0:
            bad(f"fresh_ratio must be >= 0, got {self.fresh_ratio}")
        if int(self.bonus_grid) < 1:
            bad(f"bonus_grid must be >= 1, got {self.bonus_grid}")

    @property
    def dynamic_interval(self) -> bool:
        # Official force_scheduler: the dynamic rule is switched off in FORA mode (ratio 0).
        return (self.interval_weight != 0 or self.sensitive_band is not None) and (
            self.fresh_ratio != 0
        )

    def needs_num_steps(self) -> bool:
        """Whether the schedule depends on the total number of calls of a run."""
        return (
            self.step_order == "down"
            or self.dynamic_interval
            or (self.ratio_schedule == "toca" and self.method in ("toca", "duca"))
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_DIT = dict(
    interval=3,
    step_order="down",
    interval_weight=0.4,
    sensitive_band=(0.2, 0.4, 2),
    fresh_ratio=0.05,
    ratio_schedule="toca",
    ratio_weights=(2.0, -0.2, 2.5),
    bonus_grid=2,
    cross_attention="reuse",
)
_PIXART = dict(
    interval=3,
    step_order="up",
    ratio_schedule="toca",
    ratio_weights=(0.9, 0.6, 1.0),
    bonus_ratio=0.4,
    bonus_grid=4,
    cross_attention="partial",
)

#: Named policies. ``duca_dit`` / ``toca_dit`` follow the released DiT-XL/2 code (DDIM-50,
#: code step counts down, README: N=3, fresh_ratio 0.05 (DuCa) / 0.07 (ToCa README, DDIM-50),
#: s4 bonus 0.8 (DuCa) / 0.6 (ToCa) on a 2x2 grid, the released per-block step type
#: ``layer_quirk=True``); ``duca_pixart`` / ``toca_pixart`` the released PixArt-alpha code
#: (DPM-Solver++ 20, counts up, bonus 0.4 on 4x4; DuCa README fresh_ratio 0.75, ToCa: CLI
#: default 0.30 [UNVERIFIED: the ToCa PixArt README value was not read]). The official scores were
#: ``attention`` (DiT/PixArt READMEs) and ``random`` (DiT ``sample_ddp.py``); the DuCa presets
#: use V-norm here because it keeps fused attention, pass ``score=`` to change it. The generic
#: ``duca`` / ``toca`` use the PixArt-style static modulo cycle with a constant ratio of 0.3
#: (the ToCa CLI default, and the setting of the CPU trials in the notes).
PRESETS: dict[str, CachePolicy] = {
    "none": CachePolicy(method="none"),
    "fora": CachePolicy(method="fora", interval=3),
    "toca": CachePolicy(method="toca", interval=3, score="attention"),
    "duca": CachePolicy(method="duca", interval=3, score="vnorm"),
    "duca_dit": CachePolicy(
        method="duca", score="vnorm", bonus_ratio=0.8, layer_quirk=True, **_DIT
    ),
    "toca_dit": CachePolicy(
        method="toca",
        score="attention",
        bonus_ratio=0.6,
        layer_quirk=True,
        **{**_DIT, "fresh_ratio": 0.07},
    ),
    "duca_pixart": CachePolicy(method="duca", score="vnorm", fresh_ratio=0.75, **_PIXART),
    "toca_pixart": CachePolicy(
        method="toca", score="attention", fresh_ratio=0.3, interval_weight=-0.2, **_PIXART
    ),
}


def get_policy(policy: str | CachePolicy = "duca", **overrides: Any) -> CachePolicy:
    """A :class:`CachePolicy` from a preset name (or a policy), with fields overridden."""
    if isinstance(policy, CachePolicy):
        base = policy
    else:
        key = str(policy).lower().replace("-", "_")
        if key not in PRESETS:
            raise VislearnError(
                f"unknown cache policy {policy!r}; choose one of {', '.join(PRESETS)}"
            )
        base = PRESETS[key]
    names = {f.name for f in fields(CachePolicy)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise VislearnError(f"unknown cache policy field(s): {', '.join(unknown)}")
    if "sensitive_band" in overrides and overrides["sensitive_band"] is not None:
        overrides["sensitive_band"] = tuple(overrides["sensitive_band"])
    if "ratio_weights" in overrides:
        overrides["ratio_weights"] = tuple(overrides["ratio_weights"])
    return replace(base, **overrides) if overrides else base


def _classify(s: int, n: int, first: bool) -> StepType:
    if first or s % n == 0:
        return StepType.FULL
    if (s % n) % 2 == 1:
        return StepType.CONSERVATIVE
    return StepType.AGGRESSIVE


class StepPlanner:
    """Yields the step type(s) of call 0, 1, ... of one run.

    :meth:`next` returns ``(type of block 0, type of the other blocks)``; the two differ only with
    ``layer_quirk=True``. ``num_steps`` may be ``None`` when the policy does not need it
    (:meth:`CachePolicy.needs_num_steps`); calls past ``num_steps`` are full.
    """

    def __init__(self, policy: CachePolicy, num_steps: int | None) -> None:
        if num_steps is None and policy.needs_num_steps():
            raise VislearnError(
                "this cache policy needs the number of sampling steps of a run: pass "
                "num_steps= (or scheduler=) to the cache, or reset(num_steps=...)"
            )
        self.policy = policy
        self.num_steps = num_steps
        self.i = 0
        self.interval = int(policy.interval)

    def _code_step(self, i: int) -> int:
        if self.policy.step_order == "down":
            return self.num_steps - 1 - i
        return i

    def _update_interval(self, s: int) -> None:
        p, n_total = self.policy, self.num_steps
        w = p.interval_weight
        factor = 1 + w - 2 * w * s / n_total
        n = round(p.interval / factor) if factor > 0 else p.interval
        if p.sensitive_band is not None:
            lo, hi, n_band = p.sensitive_band
            if s in range(int(n_total * lo), int(n_total * hi)):
                n = n_band
        self.interval = max(1, int(n))

    def next(self) -> tuple[StepType, StepType]:
        p, i = self.policy, self.i
        self.i += 1
        if p.method == "none" or (self.num_steps is not None and i >= self.num_steps):
            return StepType.FULL, StepType.FULL
        s = self._code_step(i)
        first = i < p.warmup
        n = int(p.interval) if i == 0 else self.interval
        t0 = _classify(s, n, first)
        t_rest = t0
        if t0 is StepType.FULL and p.dynamic_interval:
            self._update_interval(s)
            if p.layer_quirk and not first:
                t_rest = _classify(s, self.interval, False)
        return _map_method(p.method, t0), _map_method(p.method, t_rest)

    def upcoming(self, group: int) -> list[tuple[int, StepType]]:
        """``(call, type)`` of the coming calls for block 0 (``group=0``) or the other blocks
        (``group=1``), up to and without their next full call (or the end of the run); the
        planner itself does not move."""
        ahead = copy.copy(self)
        out: list[tuple[int, StepType]] = []
        cap = self.i + 100_000  # without num_steps a full call comes every `interval` calls
        while ahead.i < cap and (self.num_steps is None or ahead.i < self.num_steps):
            call = ahead.i
            t = ahead.next()[group]
            if t is StepType.FULL:
                break
            out.append((call, t))
        return out


def _map_method(method: str, t: StepType) -> StepType:
    if t is StepType.FULL:
        return t
    if method == "fora":
        return StepType.REUSE
    if method == "toca":
        return StepType.CONSERVATIVE
    return t


def plan_steps(policy: CachePolicy | str, num_steps: int) -> list[tuple[StepType, StepType]]:
    """``(block-0 type, other blocks' type)`` for each of ``num_steps`` calls."""
    planner = StepPlanner(get_policy(policy), num_steps)
    return [planner.next() for _ in range(num_steps)]


def step_types(policy: CachePolicy | str, num_steps: int) -> list[StepType]:
    """The step type of each of ``num_steps`` model calls of one sampling run."""
    return [t0 for t0, _ in plan_steps(policy, num_steps)]


def count_step_types(types: list[StepType] | list[str]) -> dict[str, int]:
    """``{"full": .., "conservative": .., "aggressive": .., "reuse": ..}``."""
    c = Counter(StepType(t).value for t in types)
    return {t.value: c.get(t.value, 0) for t in StepType}


def types_to_string(types: list[StepType]) -> str:
    """``"FCAFCA..."`` (F full, C conservative, A aggressive, R reuse)."""
    return "".join(StepType(t).letter for t in types)


def fresh_ratio(
    policy: CachePolicy,
    step: int,
    num_steps: int | None,
    layer: int,
    depth: int,
    module: str,
) -> float:
    """Fraction of tokens recomputed by ``module`` (``"mlp"`` / ``"cross_attn"``) of block
    ``layer`` at call ``step``, clamped to [0, 1]."""
    r = float(policy.fresh_ratio)
    if policy.ratio_schedule == "toca":
        ws, wl, wm = policy.ratio_weights
        s = num_steps - 1 - step if policy.step_order == "down" else step
        step_factor = 1 + ws - 2 * ws * s / num_steps
        layer_factor = 1 + wl - 2 * wl * layer / max(depth - 1, 1)
        module_factor = (1 + 0.6 * wm) if module == "mlp" else (1 - 0.4 * wm)
        r = r * step_factor * layer_factor * module_factor
    return min(max(r, 0.0), 1.0)
