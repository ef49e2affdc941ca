"""One runner for every benchmark: seeded jobs, a cache keyed by the job's config hash,
parallel worker processes, 95 % intervals and paired differences.

Only the standard library, numpy, PyYAML and :mod:`vislearn.core.errors` /
:mod:`vislearn.core.utils`
are imported here, so ``import vislearn.bench`` stays fast (no torch, no Lightning); a job's
function imports what it needs inside its worker process.
"""

from vislearn.bench.report import (
    aggregate,
    render_table,
    rounded_paired_diff,
    run_seconds,
    write_results,
)
from vislearn.bench.runner import BenchmarkInterrupted, Job, JobsFailed, job_key, run_jobs
from vislearn.bench.stats import bootstrap_ci, mean_ci95, paired_diff, t_quantile

__all__ = [
    "BenchmarkInterrupted",
    "Job",
    "JobsFailed",
    "aggregate",
    "bootstrap_ci",
    "job_key",
    "mean_ci95",
    "paired_diff",
    "render_table",
    "rounded_paired_diff",
    "run_jobs",
    "run_seconds",
    "t_quantile",
    "write_results",
]
