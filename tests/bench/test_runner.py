"""vislearn.bench.runner: the config-hash cache, parallel workers, failures, and a kill
in the middle of a benchmark (fault injection)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vislearn.bench.runner import Job, JobsFailed, job_key, run_jobs

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
FN = "bench_jobs:sleepy"


def jobs(log: Path | None = None, sleep: float = 0.0, offset: float = 0.0, seeds=(0, 1)):
    cfg = {"sleep": sleep, "offset": offset, "log": str(log) if log else None}
    return [Job(name, s, dict(cfg, row=name), FN) for name in ("a", "b") for s in seeds]


def test_key_is_canonical_and_display_is_not_hashed():
    j1 = Job("x", 0, {"b": 1, "a": {"d": 2, "c": 3}}, FN, display={"title": "X"})
    j2 = Job("x", 0, {"a": {"c": 3, "d": 2}, "b": 1}, FN)
    assert j1.key == j2.key == job_key(FN, {"a": {"c": 3, "d": 2}, "b": 1}, 0)
    assert Job("x", 1, j2.config, FN).key != j1.key
    assert Job("x", 0, {"b": 2, "a": {"c": 3, "d": 2}}, FN).key != j1.key
    assert j1.cache_file("/c") == Path("/c/x") / f"{j1.key[:16]}.json"
    assert Job("v/moco", 0, {}, FN).cache_file("/c").parent == Path("/c/v__moco")


def test_cache_hit_and_miss_on_config_change(tmp_path, capsys):
    log = tmp_path / "log.txt"
    first = run_jobs(jobs(log), tmp_path / "cache", n_jobs=0, import_paths=[HERE])
    assert [r["metrics"]["score"] for r in first] == [0.0, 10.0, 0.0, 10.0]
    assert len(log.read_text().splitlines()) == 4
    rec = json.loads(
        Job("a", 1, jobs(log)[1].config, FN).cache_file(tmp_path / "cache").read_text()
    )
    assert rec["name"] == "a" and rec["seed"] == 1 and rec["fn"] == FN
    assert rec["config"]["row"] == "a" and rec["metrics"]["score"] == 10.0
    # unchanged recipe: everything cached, nothing runs
    again = run_jobs(jobs(log), tmp_path / "cache", n_jobs=0, import_paths=[HERE])
    assert again == first
    assert len(log.read_text().splitlines()) == 4
    # a changed recipe is a new key: rerun (the old result stays, under its own key)
    changed = run_jobs(jobs(log, offset=0.5), tmp_path / "cache", n_jobs=0, import_paths=[HERE])
    assert [r["metrics"]["score"] for r in changed] == [0.5, 10.5, 0.5, 10.5]
    assert len(log.read_text().splitlines()) == 8
    assert len(list((tmp_path / "cache" / "a").glob("*.json"))) == 4
    # report only: cached records, nothing run
    more = jobs(log, offset=0.5, seeds=(0, 1, 2))
    assert len(run_jobs(more, tmp_path / "cache", report_only=True)) == 4
    assert "4 cached, 2 to run (report only)" in capsys.readouterr().out


def test_parallel_workers(tmp_path, capsys):
    out = run_jobs(jobs(sleep=0.1), tmp_path, n_jobs=2, import_paths=[HERE])
    assert [(r["name"], r["seed"], r["metrics"]["sq"]) for r in out] == [
        ("a", 0, 0), ("a", 1, 1), ("b", 0, 0), ("b", 1, 1),
    ]  # fmt: skip
    assert len({r["metrics"]["pid"] for r in out}) == 4  # a fresh process per job
    assert os.getpid() not in {r["metrics"]["pid"] for r in out}
    text = capsys.readouterr().out
    assert text.count("done ") == 4 and "score=" in text


def test_failing_job_does_not_stop_the_others(tmp_path):
    js = [Job("f", s, {"bad": 1}, "bench_jobs:failing") for s in (0, 1, 2)]
    with pytest.raises(JobsFailed) as info:
        run_jobs(js, tmp_path, n_jobs=2, import_paths=[HERE])
    assert [(f["name"], f["seed"]) for f in info.value.failures] == [("f", 1)]
    assert "ValueError: bad seed 1" in str(info.value)
    assert [r["seed"] for r in info.value.results] == [0, 2]
    assert len(list((tmp_path / "f").glob("*.json"))) == 2  # the others were cached


DRIVER = """
import sys
from pathlib import Path
from vislearn.bench import Job, aggregate, run_jobs, write_results
cache, log, out = (Path(p) for p in sys.argv[1:4])
cfg = {"sleep": 0.3, "log": str(log)}
jobs = [Job(n, s, cfg, "bench_jobs:sleepy") for n in ("a", "b", "c") for s in (0, 1)]
res = run_jobs(jobs, cache, n_jobs=2, import_paths=[sys.argv[4]])
write_results(out, "fault", {}, aggregate(res, ["score"], baseline="a"))
"""


def test_killed_benchmark_resumes_without_losing_or_repeating_jobs(tmp_path):
    cache, log, out = tmp_path / "cache", tmp_path / "log.txt", tmp_path / "out.json"
    argv = [sys.executable, "-c", DRIVER, str(cache), str(log), str(out), str(HERE)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)])}
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while len(list(cache.glob("*/*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, mid-benchmark
    proc.wait()
    cached_at_kill = {p.parent.name + p.name for p in cache.glob("*/*.json")}
    assert 2 <= len(cached_at_kill) < 6, "kill the run while jobs remain"
    assert not out.exists()
    assert not list(cache.glob("*/.*.tmp"))  # no half-written cache file
    logged_first = log.read_text().splitlines()
    subprocess.run(argv, env=env, check=True, timeout=60)
    runs = [" ".join(line.split()[:2]) for line in log.read_text().splitlines()]
    expected = {f"{n} {s}" for n in "abc" for s in (0, 1)}
    assert set(runs) == expected  # nothing lost
    repeated = [r for r in expected if runs.count(r) > 1]
    assert all(runs.count(r) <= 2 for r in expected)
    # only jobs in flight at the kill ran twice: at most one per worker, none of the cached
    assert len(repeated) <= 2
    assert len(runs) - len(logged_first) == 6 - len(cached_at_kill)
    data = json.loads(out.read_text())
    assert data["benchmark"] == "fault"
    assert [(r["name"], r["seeds"]) for r in data["rows"]] == [(n, [0, 1]) for n in "abc"]
    assert all(r["score_seeds"] == [0.0, 10.0] for r in data["rows"])
    assert data["rows"][1]["score_diff"] == {"baseline": "a", "mean": 0.0, "ci95": [0.0, 0.0]}


STOPPABLE = """
import sys
from vislearn.bench import Job, run_jobs
cache, log, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
cfg = {"seconds": seconds, "log": log}
jobs = [Job(n, s, cfg, "bench_jobs:interruptible") for n in ("a", "b") for s in (0, 1)]
res = run_jobs(jobs, cache, n_jobs=2, import_paths=[sys.argv[4]])
print("resumed", sorted(r["metrics"]["resumed_from"] > 0 for r in res))
"""


def _stoppable(tmp_path, seconds: float):
    cache, log = tmp_path / "cache", tmp_path / "log.txt"
    argv = [sys.executable, "-c", STOPPABLE, str(cache), str(log), str(seconds), str(HERE)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)])}
    return argv, env, cache, log


def _events(log: Path) -> list[tuple[str, str, int]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [(e, f"{n} {s}", int(pid)) for e, n, s, pid in (line.split() for line in lines)]


def _wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    try:  # a zombie (exited, not reaped by a container's init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc")
def test_sigterm_to_the_runner_checkpoints_its_jobs_and_the_rerun_resumes(tmp_path):
    argv, env, cache, log = _stoppable(tmp_path, seconds=3.0)
    proc = subprocess.Popen(
        argv, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: len(_events(log)) >= 2)  # both workers inside their "fit"
    proc.send_signal(signal.SIGTERM)  # the runner only, not its workers (e.g. `kill PID`)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM: 2 running job(s) stopped, 4 not finished" in err
    ev = _events(log)
    started = {(job, pid) for e, job, pid in ev if e == "start"}
    assert len(started) == 2 and {(job, pid) for e, job, pid in ev if e == "stop"} == started
    assert all(_gone(pid) for _, pid in started)  # no worker trains on
    assert not list(cache.glob("*/*.json"))  # nothing cached as finished
    out = subprocess.run(argv, env=env, check=True, timeout=120, capture_output=True, text=True)
    assert "4 to run" in out.stdout
    assert "resumed [False, False, True, True]" in out.stdout  # the two stopped ones resumed
    assert sum(e == "done" for e, _, _ in _events(log)) == 4


@pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc")
def test_ctrl_c_stops_runner_and_workers_with_checkpoints(tmp_path):
    argv, env, cache, log = _stoppable(tmp_path, seconds=60.0)
    proc = subprocess.Popen(
        argv, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: len(_events(log)) >= 2)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: every process of the group
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT
    assert "FAILED" not in err and "Traceback" not in err
    assert "interrupted by SIGINT: 2 running job(s) stopped, 4 not finished" in err
    started = {(job, pid) for e, job, pid in _events(log) if e == "start"}
    assert {(job, pid) for e, job, pid in _events(log) if e == "stop"} == started


@pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc")
def test_workers_of_a_killed_runner_checkpoint_and_exit(tmp_path):
    argv, env, cache, log = _stoppable(tmp_path, seconds=60.0)
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    _wait_for(lambda: len(_events(log)) >= 2)
    proc.kill()  # SIGKILL: the runner cannot tell anyone
    proc.wait()
    started = {(job, pid) for e, job, pid in _events(log) if e == "start"}
    _wait_for(lambda: all(_gone(pid) for _, pid in started), timeout=30)
    assert {(job, pid) for e, job, pid in _events(log) if e == "stop"} == started
