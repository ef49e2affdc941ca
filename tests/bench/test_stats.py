"""vislearn.bench.stats against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vislearn.bench.stats import bootstrap_ci, mean_ci95, paired_diff, t_cdf, t_quantile


def test_t_quantile_closed_forms():
    # dof 1 (Cauchy): t_q = tan(pi (q - 1/2)); dof 2: t_q = (2q - 1) / sqrt(2 q (1 - q))
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=5e-4)
    assert t_quantile(0.975, 2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), rel=1e-9)
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=5e-4)
    assert t_quantile(0.025, 2) == pytest.approx(-4.303, abs=5e-4)


def test_t_quantile_table_and_normal_limit():
    table = {3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 19: 2.093, 29: 2.045}
    for dof, t in table.items():
        assert t_quantile(0.975, dof) == pytest.approx(t, abs=5e-4)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.95996, abs=1e-4)
    assert t_cdf(0.0, 7) == pytest.approx(0.5)


def test_mean_ci95_by_hand():
    # [1, 2, 3]: mean 2, sd 1, half width 4.303 / sqrt(3) = 2.4843
    mean, ci = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0
    half = 4.302653 / math.sqrt(3)
    assert ci == pytest.approx([2 - half, 2 + half], abs=1e-5)
    # two values: sd = |a - b| / sqrt 2, half = 12.706 * sd / sqrt 2 = 12.706 * |a - b| / 2
    mean, ci = mean_ci95([70.0, 72.0])
    assert mean == 71.0
    assert ci == pytest.approx([71 - 12.7062, 71 + 12.7062], abs=1e-3)
    assert mean_ci95([5.0]) == (5.0, None)
    with pytest.raises(ValueError):
        mean_ci95([])


def test_paired_diff_uses_common_seeds_only():
    a = {0: 71.0, 1: 72.0, 2: 74.0, 5: 99.0}
    b = {0: 70.0, 1: 70.0, 2: 71.0, 7: 0.0}
    d = paired_diff(a, b)  # diffs 1, 2, 3 -> mean 2, sd 1
    assert d["n"] == 3
    assert d["mean"] == 2.0
    assert d["ci95"] == pytest.approx([2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)])
    assert paired_diff([3.0], [1.0]) == {"mean": 2.0, "ci95": None, "n": 1}
    with pytest.raises(ValueError):
        paired_diff({0: 1.0}, {1: 1.0})
    with pytest.raises(ValueError):
        paired_diff([1.0, 2.0], [1.0])


def test_bootstrap_ci_deterministic_and_paired():
    x = np.arange(20, dtype=float)
    mean, ci = bootstrap_ci(x, n_boot=2000, seed=3)
    assert mean == 9.5
    assert ci == bootstrap_ci(x, n_boot=2000, seed=3)[1]  # same seed, same interval
    assert ci[0] < 9.5 < ci[1]
    # normal approximation: se = sd / sqrt(n) = 5.916 / 4.472 = 1.323 -> half width ~2.59
    assert ci[1] - ci[0] == pytest.approx(2 * 1.96 * x.std() / math.sqrt(20), rel=0.15)
    # constant values: a zero-width interval
    assert bootstrap_ci([4.0, 4.0, 4.0], n_boot=100) == (4.0, [4.0, 4.0])
    # paired: the per-item difference (here constant 1) is resampled, not each array
    mean, ci = bootstrap_ci(x + 1.0, paired=x, n_boot=500)
    assert mean == 1.0 and ci == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], paired=[1.0])
