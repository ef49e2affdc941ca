"""benchmarks/video_fame.py on tiny settings: the job table, one smoke run of the rows that
need the new pieces (FAME with ground-truth masks, random init) and the pre-run checks."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SRC = BENCH.parent / "src"

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def video_fame(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import video_fame

    return video_fame


def test_job_table_rows_and_recipes(video_fame):
    a = argparse.Namespace(seeds=[0, 1, 2], rows=list(video_fame.ROWS), epochs=2)
    jobs = video_fame.make_jobs(a, [])
    assert len({j.key for j in jobs}) == len(jobs) == 24
    assert list(video_fame.DEFAULT_ROWS) == [
        "random_init", "moco_video", "fame", "fame_gt_masks", "supervised_unbiased"
    ]  # fmt: skip
    by = {j.name: j.config for j in jobs if j.seed == 0}
    betas = {n: c["recipe"]["model"]["fame_beta"] for n, c in by.items() if "beta" in n}
    assert betas == {"fame_beta0.2": 0.2, "fame_beta0.3": 0.3, "fame_beta0.5": 0.5}
    for name in betas:  # the sweep changes beta only
        model = {
            **by[name]["recipe"]["model"],
            "fame_beta": by["fame"]["recipe"]["model"]["fame_beta"],
        }
        assert {**by[name]["recipe"], "model": model} == by["fame"]["recipe"]
    assert by["fame_gt_masks"]["recipe"]["model"]["fame_masks"] == "gt"
    assert by["fame_gt_masks"]["recipe"]["data"]["mask_channel"] is True
    assert (
        by["fame"]["recipe"]["model"]["fame_beta"]
        == by["fame_gt_masks"]["recipe"]["model"]["fame_beta"]
    )
    assert by["moco_video"]["recipe"]["model"]["queue_order"] == "shared"
    assert by["supervised_unbiased"]["recipe"]["data"]["background_bias"] == 0
    # every row is evaluated on the same data: the biased split of the SSL recipe
    assert all(c["eval_data"] == by["moco_video"]["recipe"]["data"] for c in by.values())
    assert by["moco_video"]["eval_data"]["motion_design"] == "appearance_swap"


def test_smoke_run_writes_rows_with_the_headline_metric(tmp_path):
    out = tmp_path / "video_fame.json"
    cmd = [sys.executable, str(BENCH / "video_fame.py"), "--smoke", "--epochs", "1", "--seeds",
           "0", "--rows", "random_init", "fame_gt_masks", "--jobs", "0", "--out", str(out),
           "--cache", str(tmp_path / "cache")]  # fmt: skip
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert set(rows) == {"random_init", "fame_gt_masks"}
    for r in rows.values():
        assert 0 <= r["unbiased_probe_top1"] <= 100
        assert 0 <= r["background_var_share"] <= 100
    assert rows["fame_gt_masks"]["s_per_step"] > 0


def test_checks_on_tiny_data(video_fame):
    from video_fame_checks import design_checks

    cfg = video_fame.recipe("moco_video", 1, ["data.num_train=40"])
    out = design_checks(cfg["data"], cfg["model"], "appearance_swap")
    assert out["shared_frames"] == 0
    assert out["sprite_histogram_nn_top1"] < 30  # chance 2.5 %: appearance is not shared
    bg = [v["bg_kept"] for v in out["fame_beta"].values()]
    assert bg == sorted(bg)  # a larger beta keeps more of the clip's own background
    old = design_checks(cfg["data"], cfg["model"], "classes")
    assert old["shared_frames"] > 0 and old["sprite_histogram_nn_top1"] > 80
