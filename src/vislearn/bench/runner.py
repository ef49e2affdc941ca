"""Run benchmark jobs in worker processes, caching each finished job by its config hash.

A :class:`Job` is one (row, seed) run: ``fn`` (``"module:function"``) is called in a fresh
``spawn`` worker as ``fn(config, seed, ctx)`` and returns a dict of metrics. ``ctx`` is a dict
with ``name``, ``key`` (the job's sha256), ``resources`` (:attr:`Job.resources`),
``run_dir`` (a folder of its own, for checkpoints and logs), ``cache_dir`` and ``threads``.

Cache: ``<cache_dir>/<name>/<key[:16]>.json`` (``/`` in a name becomes ``__``) holds the key's
inputs (``name``, ``seed``, ``config``, ``fn``) and the returned ``metrics``; it is written
atomically as soon as the job finishes, so a killed benchmark loses only the jobs in flight.
The key is the sha256 of the canonical JSON (sorted keys) of ``{fn, config, seed}``: a changed
recipe is a new key and is run again; display-only fields (:attr:`Job.display`) are not part
of it.

Imports in the workers: a ``spawn`` worker starts a new interpreter, which inherits the
parent's ``sys.path``; :func:`run_jobs` also puts ``import_paths`` (e.g. the ``benchmarks/``
folder, so that ``"fmnist_ssl:run_job"`` resolves) first on the worker's ``sys.path`` in its
initialiser.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from vislearn.core.errors import VislearnError
from vislearn.core.utils import write_json

__all__ = ["Job", "JobsFailed", "job_key", "run_jobs"]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def job_key(fn: str, config: dict, seed: int) -> str:
    """sha256 (hex) of the canonical JSON of ``{fn, config, seed}``."""
    text = _canonical({"fn": fn, "config": config, "seed": seed})
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Job:
    """One run: row ``name``, ``seed``, fully resolved ``config`` (JSON-able) and ``fn``
    (``"module:function"``). ``display``: fields kept with the result but not hashed.
    ``resources``: run-time inputs passed to ``fn`` as ``ctx["resources"]`` and not hashed,
    e.g. the path of another job's checkpoint (put that job's :attr:`key` in ``config``)."""

    name: str
    seed: int
    config: dict
    fn: str
    display: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if ":" not in self.fn:
            raise VislearnError(f"job {self.name}: fn must be 'module:function', got {self.fn!r}")
        try:  # a config that does not survive JSON would give an unstable key
            self.config = json.loads(_canonical(self.config))
        except TypeError as exc:
            msg = f"job {self.name}: config is not JSON-serialisable: {exc}"
            raise VislearnError(msg) from None

    @property
    def key(self) -> str:
        return job_key(self.fn, self.config, self.seed)

    def cache_file(self, cache_dir: str | os.PathLike) -> Path:
        return Path(cache_dir) / self.name.replace("/", "__") / f"{self.key[:16]}.json"

    def run_dir(self, cache_dir: str | os.PathLike) -> Path:
        return Path(cache_dir) / self.name.replace("/", "__") / f"{self.key[:16]}.run"


class JobsFailed(VislearnError):
    """Raised by :func:`run_jobs` after every other job has finished and been cached."""

    def __init__(self, failures: list[dict], results: list[dict]):
        self.failures, self.results = failures, results
        lines = [f"  {f['name']} seed {f['seed']}: {f['error']}" for f in failures]
        super().__init__(f"{len(failures)} benchmark job(s) failed:\n" + "\n".join(lines))


def _init_worker(import_paths: Sequence[str], threads: int) -> None:
    """Worker initialiser: ``import_paths`` first on ``sys.path``; ``threads`` intra-op
    threads for torch. Importing torch costs seconds, so it is not imported here:
    ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (which torch reads when the job imports it) are
    set, and a torch already imported (e.g. at the top of the job's module) gets
    ``torch.set_num_threads`` in :func:`_call`."""
    for p in reversed(import_paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def _set_torch_threads(threads: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _resolve(fn: str):
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)


def _call(fn: str, config: dict, seed: int, ctx: dict) -> dict:
    func = _resolve(fn)
    _set_torch_threads(ctx["threads"])
    metrics = func(config, seed, ctx)
    if not isinstance(metrics, dict):
        raise TypeError(f"{fn} returned {type(metrics).__name__}, not a dict of metrics")
    return json.loads(json.dumps(metrics))  # what the cache will hold (tuples -> lists, ...)


def _record(job: Job, metrics: dict, seconds: float) -> dict:
    return {
        "name": job.name,
        "seed": job.seed,
        "fn": job.fn,
        "config": job.config,
        "key": job.key,
        "display": job.display,
        "seconds": round(seconds, 3),
        "metrics": metrics,
    }


def _summary(rec: dict, show: Sequence[str] | None) -> str:
    m = rec["metrics"]
    keys = list(show) if show else [k for k, v in m.items() if isinstance(v, int | float)][:4]
    parts = [
        f"{k}={m[k]:.4g}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in keys if k in m
    ]
    return f"done {rec['name']} seed {rec['seed']} ({rec['seconds']:.1f} s): " + " ".join(parts)


def _load(job: Job, cache_dir: Path) -> dict | None:
    f = job.cache_file(cache_dir)
    if not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: run again (writes are atomic, so this is not expected)
    return {**rec, "display": job.display}


def run_jobs(
    jobs: Iterable[Job],
    cache_dir: str | os.PathLike,
    n_jobs: int = 1,
    threads_per_job: int | None = None,
    report_only: bool = False,
    import_paths: Sequence[str | os.PathLike] = (),
    show: Sequence[str] | None = None,
) -> list[dict]:
    """Run the ``jobs`` whose result is not cached yet and return every job's record
    (``name``, ``seed``, ``fn``, ``config``, ``key``, ``display``, ``seconds``, ``metrics``),
    in the order of ``jobs``.

    ``n_jobs`` worker processes (``spawn``, one job per process), each with
    ``threads_per_job`` torch threads (default: 1 when ``n_jobs > 1``, else every core);
    ``n_jobs=0`` runs the jobs in this process (debugging). ``report_only``: run nothing and
    return the cached records. A failing job is reported and the others go on; then
    :class:`JobsFailed` is raised. ``show``: the metric names printed per finished job."""
    jobs = list(jobs)
    cache_dir = Path(cache_dir)
    keys = [j.key for j in jobs]
    if len(set(zip((j.name for j in jobs), keys, strict=True))) != len(jobs):
        raise VislearnError("run_jobs: duplicate jobs (same name, fn, config and seed)")
    threads = threads_per_job or (1 if n_jobs > 1 else (os.cpu_count() or 1))
    paths = [str(Path(p).resolve()) for p in import_paths]
    done: dict[int, dict] = {}
    todo: list[int] = []
    for i, job in enumerate(jobs):
        rec = _load(job, cache_dir)
        (done.__setitem__(i, rec) if rec is not None else todo.append(i))
    print(
        f"{len(done)} cached, {len(todo)} to run" + (" (report only)" if report_only else ""),
        flush=True,
    )
    if report_only:
        todo = []
    failures: list[dict] = []

    def ctx_of(job: Job) -> dict:
        return {
            "name": job.name,
            "key": job.key,
            "run_dir": str(job.run_dir(cache_dir)),
            "cache_dir": str(cache_dir),
            "threads": threads,
            "resources": job.resources,
        }

    def finish(i: int, metrics: dict | None, error: str | None, started: float) -> None:
        job = jobs[i]
        if error is not None:
            failures.append({"name": job.name, "seed": job.seed, "error": error})
            print(f"FAILED {job.name} seed {job.seed}: {error}", file=sys.stderr, flush=True)
            return
        rec = _record(job, metrics, time.perf_counter() - started)
        write_json(job.cache_file(cache_dir), rec)
        done[i] = rec
        print(_summary(rec, show), flush=True)

    if todo and n_jobs <= 0:
        _init_worker(paths, threads)
        for i in todo:
            t0 = time.perf_counter()
            try:
                metrics = _call(jobs[i].fn, jobs[i].config, jobs[i].seed, ctx_of(jobs[i]))
            except Exception as exc:  # noqa: BLE001 - reported, the others go on
                traceback.print_exc()
                finish(i, None, f"{type(exc).__name__}: {exc}", t0)
            else:
                finish(i, metrics, None, t0)
    elif todo:
        with ProcessPoolExecutor(
            n_jobs,
            mp_context=get_context("spawn"),
            max_tasks_per_child=1,
            initializer=_init_worker,
            initargs=(paths, threads),
        ) as pool:
            started: dict = {}
            for i in todo:
                fut = pool.submit(_call, jobs[i].fn, jobs[i].config, jobs[i].seed, ctx_of(jobs[i]))
                started[fut] = (i, time.perf_counter())
            pending = set(started)
            while pending:  # cache each job as it finishes, not in submission order
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i, t0 = started[fut]
                    exc = fut.exception()
                    if exc is None:
                        finish(i, fut.result(), None, t0)
                    else:
                        finish(i, None, f"{type(exc).__name__}: {exc}", t0)
    results = [done[i] for i in range(len(jobs)) if i in done]
    if failures:
        raise JobsFailed(failures, results)
    return results
