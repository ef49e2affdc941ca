"""Trivial job functions for the runner tests (imported by the spawn workers)."""

from __future__ import annotations

import os
import time


def sleepy(config: dict, seed: int, ctx: dict) -> dict:
    """Sleep, append ``<name> <seed>`` to ``config["log"]`` (if any), return seed metrics."""
    time.sleep(config.get("sleep", 0.1))
    if config.get("log"):
        with open(config["log"], "a") as f:
            f.write(f"{ctx['name']} {seed} {os.getpid()}\n")
    return {"score": 10.0 * seed + config.get("offset", 0.0), "sq": seed**2, "pid": os.getpid()}


def failing(config: dict, seed: int, ctx: dict) -> dict:
    if seed == config["bad"]:
        raise ValueError(f"bad seed {seed}")
    return {"score": float(seed)}
