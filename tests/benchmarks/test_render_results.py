"""benchmarks/render_results.py: the table rendering of docs/results JSON files."""

import importlib.util
from pathlib import Path

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "render_results.py"


def _module():
    spec = importlib.util.spec_from_file_location("render_results", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pivot_table_one_row_per_name_one_column_per_setting():
    r = _module()
    rows = [
        {"name": "a", "target": "fine", "protocol": "probe", "miou": 50.0},
        {"name": "a", "target": "coarse", "protocol": "probe", "miou": 20.123},
        {"name": "b", "target": "fine", "protocol": "probe", "miou": 55.5},
        {
            "name": "a",
            "target": "fine",
            "protocol": "tune",
            "miou": 60.0,
            "miou_ci95": [59.0, 61.0],
        },
    ]
    lines = r.render_pivot("seg_mdp", rows).splitlines()
    assert lines[0] == "**protocol = `probe`**"
    assert lines[2] == "| name | fine | coarse |"
    assert lines[4] == "| `a` | 50.0 | 20.1 |"
    assert lines[5] == "| `b` | 55.5 | – |"  # a missing cell is a dash, not a shifted column
    assert lines[7] == "**protocol = `tune`**"
    assert lines[9:] == ["| name | fine |", "|---|---:|", "| `a` | 60.0 [59.0, 61.0] |"]


def test_nested_keys_and_missing_values():
    r = _module()
    row = {"name": "x", "per_frame": {"JF_mean": 3.14159}, "n": 7}
    assert r._cell(row, "per_frame.JF_mean", None) == "3.14"
    assert r._cell(row, "per_frame.J_mean", None) == "–"
    assert r._cell(row, "n", None) == "7"


def test_intervals_and_paired_diff_columns():
    r = _module()
    rows = [
        {"name": "base", "acc": 70.0, "acc_ci95": [69.0, 71.0], "acc_seeds": [69.5, 70, 70.5]},
        {
            "name": "ours",
            "acc": 72.0,
            "acc_ci95": [71.0, 73.0],
            "acc_diff": {"baseline": "base", "mean": 2.0, "ci95": [1.0, 3.0]},
        },
        {"name": "old", "acc": 71.0, "acc_seeds": [70.0, 72.0], "acc_per_seed": [70.0, 72.0]},
    ]
    lines = r.render_rows(rows, [("top-1 %", "acc", "acc_per_seed")]).splitlines()
    assert lines[0] == "| name | top-1 % | Δ vs `base` |"
    assert lines[2] == "| `base` | 70.0 [69.0, 71.0] | – |"
    assert lines[3] == "| `ours` | 72.0 [71.0, 73.0] | **+2.00 [+1.00, +3.00]** ▲ |"
    assert lines[4] == "| `old` | 71.0 (70.0 / 72.0) | – |"  # no interval: the old format


def test_paired_diff_column_names_every_baseline():
    r = _module()
    rows = [
        {"name": "a_1", "acc": 1.0, "acc_diff": {"baseline": "base_1", "mean": 1.0, "ci95": None}},
        {"name": "a_2", "acc": 2.0, "acc_diff": {"baseline": "base_2", "mean": 2.0, "ci95": None}},
    ]
    lines = r.render_rows(rows, [("top-1 %", "acc", None)]).splitlines()
    assert lines[0] == "| name | top-1 % | Δ vs `base_1` / `base_2` |"


def test_learning_rate_keeps_its_significant_digits():
    r = _module()
    rows = [{"name": "a", "lr": 0.015}, {"name": "b", "lr": 0.12}]
    lines = r.render_rows(rows, [("picked lr", "lr", None)]).splitlines()
    assert lines[2:] == ["| `a` | 0.015 |", "| `b` | 0.12 |"]


def test_matched_control_difference_is_a_column_of_its_own():
    r = _module()
    rows = [
        {"name": "a", "acc_diff_matched": {"baseline": "c", "mean": 1.0, "ci95": [0.5, 1.5]}},
        {"name": "b"},
    ]
    lines = r.render_rows(rows, [("Δ matched", "acc_diff_matched", None)]).splitlines()
    assert lines[2:] == ["| `a` | **+1.00 [+0.50, +1.50]** ▲ |", "| `b` | – |"]
