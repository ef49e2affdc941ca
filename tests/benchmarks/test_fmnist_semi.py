"""benchmarks/fmnist_semi.py: the equal-exposure job table (nothing run), the validation
split, the learning-rate pick, and one --smoke run end to end (then its cache, report-only)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def semi(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import fmnist_semi

    return fmnist_semi


def _args(semi, **kw) -> argparse.Namespace:
    a = {"epochs": 10, "batches": 200, "seeds": [0, 1, 2], "ablation_seeds": [0, 1, 2],
         "fractions": list(semi.FRACTIONS), "dataset": "fmnist", "val_per_class": 500,
         "episodes": 600, "grid_points": 0, "jobs": 2}  # fmt: skip
    return argparse.Namespace(**{**a, **kw})


def test_every_row_sees_the_same_labelled_images_per_step_for_the_same_steps(semi, tmp_path):
    a = _args(semi)
    jobs = semi.make_jobs(a, tmp_path)["phase1"]
    assert len({j.key for j in jobs}) == len(jobs) == 2 * (5 + 4 + 4) + 3
    steps, composition = set(), {}
    for j in jobs:
        cfg = j.config["recipe"]
        t = cfg["trainer"]
        steps.add(t["max_epochs"] * t["limit_train_batches"])
        assert t["check_val_every_n_epoch"] > t["max_epochs"]  # no test-set monitoring
        d = cfg["data"]
        if j.name == "moco_v2":
            composition[j.name] = (0, d["batch_size"])
            continue
        composition[j.name] = (d["labelled_batch_size"], d["batch_size"])
        assert cfg["model"]["lr"] == j.config["lr"] in semi.LR_GRID[semi.base_of(j.name)]
    assert steps == {2000}
    assert composition == {
        "supervised_1pct": (64, 64), "supervised_10pct": (64, 64),
        "pseudolabel_1pct": (64, 256), "pseudolabel_10pct": (64, 256),
        "sscl_1pct": (64, 256), "sscl_10pct": (64, 256),
        "moco_v2": (0, 192),  # the semi-supervised rows' unlabelled share
    }  # fmt: skip
    assert {j.seed for j in jobs if j.name != "moco_v2"} == {0}  # the grids: seed 0 only
    assert sorted(j.seed for j in jobs if j.name == "moco_v2") == [0, 1, 2]
    # the fine-tune: the supervised row's steps and batch, on the seed's own pretraining
    pre = next(j for j in jobs if j.name == "moco_v2" and j.seed == 1)
    ft = semi.finetune_job("10pct", 1, 0.03, pre, a, tmp_path)
    c = ft.config
    assert (c["steps"], c["batch_size"], c["fraction"]) == (2000, 64, 0.1)
    assert c["init_key"] == pre.key and ft.resources["backbone"].startswith(str(tmp_path))
    # an ablation is SsCL's 1 % recipe with one switch
    abl = semi.train_job("sscl_no_calibration_1pct", 0, 0.06, a).config["recipe"]
    assert abl["method"] == "sscl" and abl["model"]["calib_mode"] == "none"
    assert abl["data"]["label_fraction"] == 0.01
    # a changed schedule is a new key
    assert not {j.key for j in semi.make_jobs(_args(semi, batches=100), tmp_path)["phase1"]} & {
        j.key for j in jobs
    }


def test_validation_split_is_balanced_and_outside_every_labelled_subset(semi):
    from vislearn.data.subsets import balanced_subset

    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 300))
    spec = {"per_class": 20, "seed": 1, "label_seed": 0, "outside_fraction": 0.1}
    val = semi.validation_indices(labels, **spec)
    assert np.bincount(labels[val]).tolist() == [20] * 10
    assert np.array_equal(val, semi.validation_indices(labels, **spec))  # seeded
    for fraction in (0.01, 0.1):
        assert not np.isin(balanced_subset(labels, fraction=fraction, seed=0), val).any()


def test_select_picks_the_best_validation_score_of_seed_0(semi):
    def rec(row, lr, val, seed=0, test=0.0):
        config = {"row": row, "lr": lr}
        return {"seed": seed, "config": config, "metrics": {"val_top1": val, "top1": test}}

    records = [
        rec("sscl_1pct", 0.03, 80.0, test=99.0),  # the test score is never looked at
        rec("sscl_1pct", 0.06, 82.0),
        rec("sscl_1pct", 0.12, 81.0),
        rec("sscl_1pct", 0.12, 90.0, seed=1),  # another seed: not part of the pick
        rec("sscl_1pct", 0.24, 80.5),
        rec("supervised_1pct", 0.03, 75.0),
        rec("supervised_1pct", 0.015, 75.0),  # a tie: the smaller rate
    ]
    assert semi.select(records, 0, grid_points=2) == {"sscl_1pct": 0.06, "supervised_1pct": 0.015}
    # a grid not finished yet (a report from a partial cache) picks nothing
    assert semi.select(records, 0) == {"sscl_1pct": 0.06}


def test_smoke_run_end_to_end_then_report_only(tmp_path, run_script):
    out, cache = tmp_path / "semi.json", tmp_path / "cache"
    args = ["--smoke", "--jobs", "0", "--out", str(out), "--cache", str(cache)]
    run_script("fmnist_semi.py", *args)
    data = json.loads(out.read_text())
    rows = {r["name"]: r for r in data["rows"]}
    main = ["supervised_1pct", "moco_v2_finetune_1pct", "pseudolabel_1pct", "sscl_1pct"]
    assert [r["name"] for r in data["rows"][:4]] == main
    for name in main:
        r = rows[name]
        assert r["seeds"] == [0, 1] and len(r["top1_ci95"]) == 2 and r["steps"] == 2
        assert r["lr"] == data["settings"]["lr_selection"][name]["picked"]
        if name != "supervised_1pct":
            assert r["top1_diff"]["baseline"] == "supervised_1pct"
    assert set(rows["sscl_1pct"]["top1_vs"]) == set(main) - {"sscl_1pct"}
    assert rows["sscl_no_calibration_1pct"]["top1_diff"]["baseline"] == "sscl_1pct"
    assert rows["sscl_no_calibration_1pct"]["lr"] == rows["sscl_1pct"]["lr"]
    assert "fewshot/moco_v2/5w1s" in rows and "fewshot/sscl_1pct/5w5s" in rows
    grid = data["settings"]["lr_selection"]["sscl_1pct"]
    assert list(grid["seed0"]) == ["0.03", "0.06"] and grid["at_grid_edge"]
    # everything is cached: a report-only pass rebuilds the same rows without running
    again = run_script("fmnist_semi.py", *args, "--report-only", timeout=300)
    assert "to run" in again.stdout and " 0 to run" in again.stdout
    assert json.loads(out.read_text())["rows"] == data["rows"]
