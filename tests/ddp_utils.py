"""Spawn harness for tests that need several ``torch.distributed`` processes (gloo, CPU).

``run_ranks(worker, tmp_dir, world)`` starts ``world`` processes; each initialises a gloo
process group through a file store, calls ``worker(rank, *args)`` and saves the object it
returns with ``torch.save``. The parent loads and returns the per-rank results, so the tests
themselves run (and compare against single-process references) in the parent.

``start_method="spawn"`` (default) starts fresh interpreters: ``worker`` must be a module-level
function (it is pickled by reference) and each child re-imports torch and the test module.
``"fork"`` skips those imports (seconds per child on a loaded 2-core machine); the children set
one intra-op thread first, so no OpenMP thread pool inherited from the parent is used.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(
    r: int, worker: Callable[..., Any], world: int, out_dir: str, args: tuple[Any, ...]
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{Path(out_dir) / 'store'}",
        rank=r,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        torch.save(worker(r, *args), Path(out_dir) / f"rank{r}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(
    worker: Callable[..., Any],
    tmp_dir: str | Path,
    world: int = 2,
    *args: Any,
    start_method: str = "spawn",
) -> list[Any]:
    """Run ``worker(rank, *args)`` in ``world`` gloo processes; return their results."""
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    mp.start_processes(
        _entry,
        args=(worker, world, str(tmp_dir), args),
        nprocs=world,
        join=True,
        start_method=start_method,
    )
    return [torch.load(tmp_dir / f"rank{r}.pt", weights_only=False) for r in range(world)]
