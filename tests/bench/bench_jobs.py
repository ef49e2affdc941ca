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


class Interrupted(SystemExit):
    def __init__(self, signum: int, path) -> None:  # two arguments: unpickling it fails
        super().__init__(128 + signum)
        self.signum, self.path = signum, path


def interruptible(config: dict, seed: int, ctx: dict) -> dict:
    """A stand-in for a fit: trains (sleeps) for ``config["seconds"]`` with vislearn's stop
    rule -- SIGTERM / SIGINT save a checkpoint (``ckpt`` in its run folder, holding the
    elapsed time) and raise :class:`Interrupted`, a ``SystemExit`` that does not pickle, like
    :class:`~vislearn.engine.interrupt.RunInterrupted` (not imported: Lightning costs seconds
    per worker); a rerun resumes from it. Appends ``start|stop|done <name> <seed> <pid>`` to
    ``config["log"]``."""
    import signal
    from pathlib import Path

    run = Path(ctx["run_dir"])
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / "ckpt"
    elapsed = float(ckpt.read_text()) if ckpt.exists() else 0.0

    def log(event: str) -> None:
        with open(config["log"], "a") as f:
            f.write(f"{event} {ctx['name']} {seed} {os.getpid()}\n")

    got: list[int] = []
    previous = {s: signal.signal(s, lambda n, _f: got.append(n)) for s in (15, 2)}
    log("start")
    try:
        while elapsed < config["seconds"]:
            if got:
                ckpt.write_text(str(elapsed))
                log("stop")
                raise Interrupted(got[0], ckpt)
            time.sleep(0.05)
            elapsed += 0.05
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    log("done")
    return {"score": float(seed), "resumed_from": float(ckpt.read_text()) if ckpt.exists() else 0.0}
