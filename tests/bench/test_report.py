"""vislearn.bench.report: rows with per-seed values, intervals, paired differences."""

from __future__ import annotations

import json
import math

import pytest

from vislearn.bench.report import (
    aggregate,
    format_cell,
    format_diff,
    render_table,
    rounded_paired_diff,
    run_seconds,
    write_results,
)


def rec(name: str, seed: int, **metrics) -> dict:
    return {"name": name, "seed": seed, "config": {"target": "t"}, "metrics": metrics}


RESULTS = [
    rec("base", 1, acc=70.0, speed=5),
    rec("base", 0, acc=70.0, speed=5),
    rec("base", 2, acc=71.0, speed=5),
    rec("ours", 2, acc=74.0),
    rec("ours", 0, acc=71.0),
    rec("ours", 1, acc=72.0),
    rec("ours", 3, acc=99.0),  # no baseline run at seed 3: not in the paired difference
]


def test_aggregate_means_intervals_and_paired_diff():
    rows = aggregate(RESULTS, ["acc", "speed"], baseline="base")
    base, ours = rows
    assert base["name"] == "base" and base["seeds"] == [0, 1, 2]
    assert base["acc_seeds"] == [70.0, 70.0, 71.0]
    assert base["acc"] == pytest.approx(70.3333, abs=1e-4)
    assert "acc_diff" not in base
    assert ours["seeds"] == [0, 1, 2, 3]
    assert ours["acc_seeds"] == [71.0, 72.0, 74.0, 99.0]
    assert "speed" not in ours
    # pairs (71-70, 72-70, 74-71) = (1, 2, 3): mean 2, half width 4.3027 / sqrt 3
    d = ours["acc_diff"]
    assert d["baseline"] == "base" and d["mean"] == 2.0
    half = 4.302653 / math.sqrt(3)
    assert d["ci95"] == pytest.approx([2 - half, 2 + half], abs=1e-4)
    assert base["speed_ci95"] == [5.0, 5.0]


def test_aggregate_group_keys_pair_within_the_same_setting():
    rs = [
        {"name": n, "seed": s, "config": {"frac": f}, "metrics": {"miou": v}}
        for n, f, s, v in [
            ("a", 1.0, 0, 50.0), ("a", 0.1, 0, 20.0), ("b", 1.0, 0, 55.0), ("b", 0.1, 0, 21.0),
        ]
    ]  # fmt: skip
    rows = aggregate(rs, ["miou"], baseline="a", group_keys=("name", "frac"))
    assert [(r["name"], r["frac"]) for r in rows] == [
        ("a", 1.0),
        ("a", 0.1),
        ("b", 1.0),
        ("b", 0.1),
    ]
    assert rows[2]["miou_diff"] == {"baseline": "a", "mean": 5.0, "ci95": None}
    assert rows[3]["miou_diff"]["mean"] == 1.0
    assert "miou_ci95" not in rows[0]  # one seed: no interval


def test_render_table_marks_wins(tmp_path):
    rows = aggregate(RESULTS, ["acc"], baseline="base")
    table = render_table(rows, [("top-1 %", "acc")])
    lines = table.splitlines()
    assert lines[0] == "| name | top-1 % | Δ top-1 % vs `base` |"
    assert lines[2].startswith("| `base` | 70.3 [")
    assert lines[2].endswith("| – |")
    assert "+2.00 [-0.48, +4.48]" in lines[3] and "**" not in lines[3]  # interval spans 0
    win = {"name": "w", "acc": 3.0, "acc_diff": {"baseline": "b", "mean": 3.0, "ci95": [1, 5]}}
    assert "**+3.00 [+1.00, +5.00]** ▲" in render_table([win], ["acc"])
    assert format_cell({"name": "x", "n": 7}, "n") == "7"
    assert format_cell({"name": "x"}, "n") == "–"
    out = tmp_path / "r.json"
    write_results(out, "demo", {"seeds": [0, 1, 2]}, rows)
    data = json.loads(out.read_text())
    assert data["benchmark"] == "demo" and data["rows"] == rows


def test_format_diff_marks_only_intervals_that_exclude_zero():
    row = {
        "knn_diff": {"mean": 1.06, "ci95": [0.74, 1.39]},
        "knn_diff_matched": {"mean": -0.2, "ci95": [-0.9, 0.5]},
        "lin_diff": {"mean": -0.63, "ci95": [-1.08, -0.19]},
        "one_diff": {"mean": 0.5},
    }
    assert format_diff(row, "knn") == "**+1.06 [+0.74, +1.39]** ▲"
    assert format_diff(row, "knn", suffix="_diff_matched") == "-0.20 [-0.90, +0.50]"
    assert format_diff(row, "lin") == "**-0.63 [-1.08, -0.19]** ▼"
    assert format_diff(row, "one") == "+0.50 (1 seed)"
    assert format_diff(row, "missing") == "–"


def test_run_seconds_sums_each_runs_own_wall_clock():
    recs = [{"metrics": {"wall_seconds": 12.25}}, {"metrics": {"wall_seconds": 7.5}},
            {"metrics": {"top1": 80.0}}]  # fmt: skip
    assert run_seconds(recs) == 19.8  # a run without a wall clock adds nothing
    assert run_seconds([]) == 0


def test_rounded_paired_diff_pairs_by_seed_and_rounds():
    d = rounded_paired_diff({0: 1.23456, 1: 2.0, 7: 9.0}, {0: 1.0, 1: 1.5}, ndigits=2)
    assert d["mean"] == round((0.23456 + 0.5) / 2, 2) and d["n"] == 2  # seed 7 has no pair
    assert len(d["ci95"]) == 2 and d["ci95"][0] < d["mean"] < d["ci95"][1]
    assert rounded_paired_diff({0: 2.0}, {0: 1.0}) == {"mean": 1.0, "ci95": None, "n": 1}
