"""Seeding and argument checks shared by the synthetic data generators."""

from __future__ import annotations

from typing import Any

import numpy as np

from vislearn.core.errors import VislearnError

__all__ = ["check_channels", "check_positive_int", "seeded_rng", "translation_start"]


def seeded_rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent stream per (seed, keys...), stable across NumPy versions' defaults."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), *keys])))


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise VislearnError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise VislearnError(f"channels must be 1 or 3, got {channels!r}")
    return channels


def translation_start(lo: float, hi: float, shift: float, rng: np.random.Generator) -> float:
    """A start coordinate in [lo, hi] such that start + shift also is (centred if impossible)."""
    a, b = lo - min(0.0, shift), hi - max(0.0, shift)
    if a > b:
        return (lo + hi - shift) / 2
    return float(rng.uniform(a, b))
