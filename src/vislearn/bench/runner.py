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

Stopping: SIGTERM or SIGINT to the runner (the first one; a second Ctrl-C stops at once) asks
every running job to stop: each worker's watchdog thread raises SIGTERM in the job's main thread,
which a vislearn fit turns into a checkpoint and a clean stop
(:mod:`vislearn.engine.interrupt`); jobs not started yet are not started. The runner then
exits with :class:`BenchmarkInterrupted` (status 128 + the signal number), and the same
command resumes: finished jobs from the cache, stopped ones from their checkpoints. A worker
whose runner died (even by SIGKILL) stops its job the same way, so no orphan trains on.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import sys
import threading
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

__all__ = ["BenchmarkInterrupted", "Job", "JobsFailed", "job_key", "run_jobs"]

#: seconds between a worker's checks of the stop event and of its runner being alive
WATCH_SECONDS = 1.0


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


class BenchmarkInterrupted(SystemExit):
    """:func:`run_jobs` stopped by a signal: finished jobs are cached, running ones saved
    their checkpoints; exits with 128 + ``signum``. Rerunning the same command resumes."""

    def __init__(self, signum: int, stopped: int, remaining: int) -> None:
        super().__init__(128 + int(signum))
        self.signum, self.stopped, self.remaining = int(signum), stopped, remaining

    @property
    def message(self) -> str:
        return (
            f"vislearn: benchmark interrupted by {signal.Signals(self.signum).name}: "
            f"{self.stopped} running job(s) stopped, {self.remaining} not finished; rerun the "
            "same command to resume"
        )


class JobStopped(Exception):
    """A job that stopped on request (its fit checkpointed) or was never started; picklable,
    unlike the ``SystemExit`` a fit raises, so it crosses the process boundary."""


_STOP: Any = None  # the worker's copy of the runner's stop event
NOT_STARTED = "not started"


def _init_worker(
    import_paths: Sequence[str], threads: int, stop: Any = None, runner_pid: int | None = None
) -> None:
    """Worker initialiser: ``import_paths`` first on ``sys.path``; ``threads`` intra-op
    threads for torch. Importing torch costs seconds, so it is not imported here:
    ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (which torch reads when the job imports it) are
    set, and a torch already imported (e.g. at the top of the job's module) gets
    ``torch.set_num_threads`` in :func:`_call`. With a ``stop`` event, a watchdog thread stops
    the job when it is set or when the runner ``runner_pid`` is gone."""
    global _STOP
    for p in reversed(import_paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if stop is not None:
        _STOP = stop
        # Ctrl-C reaches the whole process group: the runner decides (stop event); a fit's
        # handler, installed while it trains, still takes SIGINT as its own stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threading.Thread(target=_watch, args=(stop, runner_pid), daemon=True).start()


def _watch(stop: Any, runner_pid: int | None) -> None:
    """Wait for the stop event (or the runner's death), then raise SIGTERM in the main thread
    every :data:`WATCH_SECONDS`: a fit's handler (installed only while it trains) checkpoints
    and stops; outside a fit the signal is ignored and the next fit, if any, is stopped."""
    import _thread

    while not stop.wait(WATCH_SECONDS):
        if runner_pid is not None and os.getppid() != runner_pid:
            break
    while True:
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
            _thread.interrupt_main(signal.SIGTERM)
        time.sleep(WATCH_SECONDS)


def _set_torch_threads(threads: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _resolve(fn: str):
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)


def _call(fn: str, config: dict, seed: int, ctx: dict) -> dict:
    if _STOP is not None and _STOP.is_set():
        raise JobStopped(NOT_STARTED)
    func = _resolve(fn)
    _set_torch_threads(ctx["threads"])
    try:
        metrics = func(config, seed, ctx)
    except KeyboardInterrupt:  # a second Ctrl-C inside a fit: stopped without a checkpoint
        raise JobStopped("stopped at once (second Ctrl-C), no checkpoint") from None
    except SystemExit as exc:  # not picklable in general (RunInterrupted): name it here
        if getattr(exc, "signum", None) is not None or (_STOP is not None and _STOP.is_set()):
            raise JobStopped(getattr(exc, "message", None) or f"exit status {exc.code}") from None
        raise RuntimeError(f"{fn} exited with status {exc.code}") from None
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
        _run_pool(todo, jobs, n_jobs, paths, threads, ctx_of, finish)
    results = [done[i] for i in range(len(jobs)) if i in done]
    if failures:
        raise JobsFailed(failures, results)
    return results


def _run_pool(todo, jobs, n_jobs, paths, threads, ctx_of, finish) -> None:
    """Run ``jobs[i]`` for ``i`` in ``todo`` on ``n_jobs`` spawn workers, calling
    ``finish(i, metrics, error, started)`` as each ends; a first SIGTERM / SIGINT stops them
    (module docstring) and raises :class:`BenchmarkInterrupted` once every worker is out."""
    mp = get_context("spawn")
    stop = mp.Event()
    got: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if got and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if not got:
            got.append(int(signum))
            stop.set()
            name = signal.Signals(signum).name
            print(f"vislearn: {name}: stopping the running jobs at their next step (checkpoint "
                  "saved); a second Ctrl-C stops at once", file=sys.stderr, flush=True)  # fmt: skip

    started: dict = {}  # future -> (job index, start time)
    stopped = 0
    previous = _install(on_signal)
    try:
        with ProcessPoolExecutor(
            n_jobs,
            mp_context=mp,
            max_tasks_per_child=1,
            initializer=_init_worker,
            initargs=(paths, threads, stop, os.getpid()),
        ) as pool:
            for i in todo:
                fut = pool.submit(_call, jobs[i].fn, jobs[i].config, jobs[i].seed, ctx_of(jobs[i]))
                started[fut] = (i, time.perf_counter())
            pending = set(started)
            while pending:  # cache each job as it finishes, not in submission order
                finished, pending = wait(pending, WATCH_SECONDS, return_when=FIRST_COMPLETED)
                if got:
                    for fut in pending:
                        fut.cancel()  # queued, not started: never starts
                for fut in finished:
                    i, t0 = started[fut]
                    if fut.cancelled():
                        continue
                    exc = fut.exception()
                    if isinstance(exc, JobStopped):
                        stopped += str(exc) != NOT_STARTED
                        continue
                    if exc is None:
                        finish(i, fut.result(), None, t0)
                    else:
                        finish(i, None, f"{type(exc).__name__}: {exc}", t0)
    finally:
        _install(previous)
    if got:
        unfinished = [f for f in started if f.cancelled() or isinstance(f.exception(), JobStopped)]
        err = BenchmarkInterrupted(got[0], stopped, len(unfinished))
        print(err.message, file=sys.stderr, flush=True)
        raise err


def _install(handler) -> dict:
    """Set ``handler`` (one callable, or a ``{signum: handler}`` dict as returned here) for
    SIGTERM and SIGINT; return the previous ones. A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.getsignal(signum)
        new = handler.get(signum) if isinstance(handler, dict) else handler
        signal.signal(signum, new if new is not None else signal.SIG_DFL)
    return previous
