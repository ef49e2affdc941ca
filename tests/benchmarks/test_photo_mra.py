"""benchmarks/photo_mra.py: the job table of every phase (nothing run), the learning-rate and
mask-ratio picks on the validation split, the cost plan, and one --smoke run end to end (then
its cache, report-only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import photo_mra

    return photo_mra


def rec(row: str, frac: str, lr: float, val: float, seed: int = 0, ratio=None) -> dict:
    config = {"kind": "cls", "row": row, "fraction": frac, "lr": lr, "ratio": ratio}
    return {"seed": seed, "config": config, "metrics": {"val_top1": val, "top1": 0.0}}


def finished_grids(bench, a) -> list[dict]:
    """Seed 0's grids, 0.06 best everywhere except cutmix_100pct (0.12)."""
    out = []
    for k in bench.TUNED:
        for f in a.fractions:
            for lr in a.lr_grid:
                best = 0.12 if (k, f) == ("cutmix", "100pct") else 0.06
                out.append(rec(k, f, lr, 80.0 + (lr == best)))
    return out


def test_job_tables_of_the_three_phases(bench, tmp_path):
    a = bench.parse_args(["--cache", str(tmp_path)])
    assert a.epochs == {"100pct": 5, "10pct": 3, "1pct": 2}
    one = bench.phase_jobs(a, 1)
    mae, grid = one[0], one[1:]
    assert mae.name == "mae_pretraining" and len(grid) == 3 * 3 * 3
    assert len({j.key for j in one}) == len(one) and {j.seed for j in grid} == {0}
    m = mae.config["recipe"]
    assert m["method"] == "mae" and m["data"]["dataset"] == "photo-fmnist"
    assert m["model"]["backbone_kwargs"] == {"img_size": 32} and not m["model"]["norm_pix_loss"]
    assert m["trainer"]["max_epochs"] == m["trainer"]["check_val_every_n_epoch"] == 15
    for j in grid:
        c = j.config["recipe"]
        t, d = c["trainer"], c["data"]
        assert t["check_val_every_n_epoch"] > t["max_epochs"] == a.epochs[j.config["fraction"]]
        assert c["model"]["lr"] == j.config["lr"] and d["dataset"] == "photo-fmnist"
        frac = bench.FRACTIONS[j.config["fraction"]]
        assert d["label_fraction"] == frac and d["labelled_batch_size"] == (frac and 256)
        assert j.config["val"]["outside_fraction"] == 0.1 and "mae_key" not in j.config

    two = bench.phase_jobs(a, 2, finished_grids(bench, a))
    mra = [j for j in two if j.name.startswith("mra")]
    assert len(mra) == 3 * 3 and len(two) - len(mra) == 3 * 3 * 2
    assert {j.seed for j in mra} == {0}  # seed 0 sweeps the ratios; the others run the pick
    assert {j.seed for j in two if not j.name.startswith("mra")} == {1, 2}
    for j in mra:
        c = j.config["recipe"]
        assert c["model"]["mra"]["mask_ratio"] == j.config["ratio"] and c["data"]["mask_channel"]
        assert c["model"]["mra"]["score"] == "token_dot" and j.config["lr"] == 0.06
        assert j.config["mae_key"] == mae.key
        assert j.resources["mae"] == str(mae.run_dir(tmp_path) / "mae.safetensors")
    assert {j.name for j in mra} >= {"mra25_1pct", "mra50_10pct", "mra75_100pct"}
    assert next(j for j in two if j.name == "cutmix_100pct").config["lr"] == 0.12

    sweep = [rec(f"mra{round(100 * r)}", f, 0.06, 70.0 + (r == 0.75) * (f == "1pct"), 0, r)
             for f in a.fractions for r in a.ratios]  # fmt: skip
    # seed 1 at ratio 0.5 would pick 0.5 at 1 %, but only the sweep seed picks
    sweep.append(rec("mra50", "1pct", 0.06, 99.0, 1, 0.5))
    three = bench.phase_jobs(a, 3, finished_grids(bench, a) + sweep)
    oracle = [j for j in three if j.name.startswith("oracle")]
    names = ["oracle25_100pct", "oracle25_10pct", "oracle75_1pct"]
    assert sorted({j.name for j in oracle}) == names
    assert all(j.config["recipe"]["model"]["mra"]["score"] == "oracle" for j in oracle)
    assert len(oracle) == 9 and {j.seed for j in oracle} == {0, 1, 2}
    rest = [j for j in three if j.name.startswith("mra")]
    assert sorted((j.name, j.seed) for j in rest) == [
        (n, s) for n in ("mra25_100pct", "mra25_10pct", "mra75_1pct") for s in (1, 2)]  # fmt: skip
    assert all(j.config["recipe"]["model"]["mra"]["score"] == "token_dot" for j in rest)
    # the cost plan counts the same jobs
    plan = bench.plan(a)
    assert [plan[p]["jobs"] for p in ("phase1", "phase2", "phase3")] == [28, 27, 15]
    every = bench.plan(bench.parse_args(["--cache", str(tmp_path), "--ratio-seeds", "3"]))
    assert [every[p]["jobs"] for p in ("phase1", "phase2", "phase3")] == [28, 45, 9]
    with pytest.raises(SystemExit, match="ratio-seeds"):
        bench.parse_args(["--ratio-seeds", "4"])
    assert plan["total"]["wall_s"] < 2.1 * 3600  # the default fits ~2 h on 2 cores
    # a changed schedule is a new key
    longer = bench.phase_jobs(bench.parse_args(["--cache", str(tmp_path), "--epochs", "6"]), 1)
    assert not {j.key for j in longer[1:]} & {j.key for j in grid}
    assert longer[0].key == mae.key


def test_rows_restrict_every_phase_and_the_plan(bench, tmp_path):
    args = ["--cache", str(tmp_path), "--rows", "baseline", "cutmix", "--fractions", "100pct",
            "--epochs", "100pct=40"]  # fmt: skip
    a = bench.parse_args(args)
    one = bench.phase_jobs(a, 1)  # no MAE: no row needs it
    assert sorted({j.name for j in one}) == ["baseline_100pct", "cutmix_100pct"]
    assert len(one) == 2 * 3 and all(j.config["recipe"]["trainer"]["max_epochs"] == 40 for j in one)
    two = bench.phase_jobs(a, 2, finished_grids(bench, a))
    assert sorted((j.name, j.seed) for j in two) == [
        (n, s) for n in ("baseline_100pct", "cutmix_100pct") for s in (1, 2)]  # fmt: skip
    assert bench.phase_jobs(a, 3, finished_grids(bench, a)) == []
    plan = bench.plan(a)
    assert [plan[p]["jobs"] for p in ("phase1", "phase2", "phase3")] == [6, 4, 0]
    wide_args = bench.parse_args([*args, "--width", "32"])
    wide = bench.phase_jobs(wide_args, 1)
    assert {j.config["recipe"]["model"]["backbone_kwargs"]["width"] for j in wide} == {32}
    # the plan prices the wider classifier: same jobs, each step WIDTH_COST[32] baseline steps
    wide_plan, sec = bench.plan(wide_args), bench.step_seconds(wide_args)
    assert [wide_plan[p]["jobs"] for p in ("phase1", "phase2", "phase3")] == [6, 4, 0]
    base = bench.STEP_SECONDS["baseline"]
    assert sec["baseline"] == pytest.approx(base * bench.WIDTH_COST[32], abs=1e-3)
    assert sec["cutmix"] - bench.STEP_SECONDS["cutmix"] == pytest.approx(sec["baseline"] - base)
    assert sec["mae"] == bench.STEP_SECONDS["mae"]
    ratio = wide_plan["total"]["cpu_s"] / plan["total"]["cpu_s"]
    assert 2.0 < ratio < bench.WIDTH_COST[32]  # the per-job overhead does not scale
    with pytest.raises(SystemExit, match="--measure"):
        bench.plan(bench.parse_args([*args, "--width", "24"]))
    assert {j.config["recipe"]["model"]["backbone_kwargs"]["width"] for j in one} == {16}
    with pytest.raises(SystemExit, match="baseline"):
        bench.parse_args(["--rows", "cutmix"])
    with pytest.raises(SystemExit, match="oracle-ratios"):
        bench.parse_args(["--rows", "baseline", "oracle"])
    a = bench.parse_args(["--cache", str(tmp_path), "--rows", "baseline", "oracle",
                          "--oracle-ratios", "0.25", "--fractions", "1pct"])  # fmt: skip
    assert bench.phase_jobs(a, 1)[0].name == "mae_pretraining"
    three = bench.phase_jobs(a, 3, finished_grids(bench, a))
    assert sorted((j.name, j.seed) for j in three) == [("oracle25_1pct", s) for s in (0, 1, 2)]


def test_train_probe_draws_from_the_images_a_row_trained_on(bench):
    import numpy as np

    from vislearn.data.semi import LabelledSubset, PartiallyLabelledDataset

    class Base:
        labels = np.arange(12000) % 10

    full = LabelledSubset(Base(), np.arange(2000, 12000))  # 100 %: all but a held-out split
    idx = bench.train_probe(full)
    assert len(idx) == bench.TRAIN_PROBE["images"] == len(set(idx)) and min(idx) >= 2000
    assert idx == bench.train_probe(full)  # seeded
    few = PartiallyLabelledDataset(Base(), np.arange(0, 12000, 100))  # a label fraction
    assert bench.train_probe(few) == list(range(0, 12000, 100))


def test_cutmix_label_check_against_analytic_cases(bench):
    import torch

    full = torch.ones(50, 16, 16, dtype=torch.uint8)  # the object fills the frame
    c = bench.cutmix_label_check(full, pairs=300, seed=0, alpha=1.0)
    assert c["label_error"] == 0 and c["box_without_object"] == c["anchor_object_hidden"] == 0
    assert c["object_area"] == 1 and c["pairs"] == 300
    dot = torch.zeros(50, 16, 16, dtype=torch.uint8)
    dot[:, 0, 0] = 1  # one corner pixel: a box either holds the whole object or none of it
    d = bench.cutmix_label_check(dot, pairs=300, seed=0, alpha=1.0)
    assert d["label_error"] > 0.2 and d["box_without_object"] > 0.5
    assert d == bench.cutmix_label_check(dot, pairs=300, seed=0, alpha=1.0)  # seeded


def test_picks_use_validation_scores_and_finished_grids_only(bench):
    records = [
        rec("baseline", "10pct", 0.03, 80.0),
        rec("baseline", "10pct", 0.06, 82.0),
        rec("baseline", "10pct", 0.12, 82.0),  # a tie: the smaller rate
        rec("baseline", "10pct", 0.12, 99.0, seed=1),  # another seed: not part of the pick
        rec("mixup", "10pct", 0.03, 90.0),  # its grid has not finished
    ]
    assert bench.pick_lr(records, 0, [0.03, 0.06, 0.12]) == {("baseline", "10pct"): 0.06}
    sweep = [rec("mra25", "1pct", 0.06, 60.0, s, 0.25) for s in (0, 1)]
    sweep += [rec("mra50", "1pct", 0.06, v, s, 0.5) for s, v in ((0, 70.0), (1, 55.0))]
    assert bench.pick_ratio(sweep, [0.25, 0.5], [0, 1]) == {"1pct": 0.5}  # means 60 vs 62.5
    assert bench.pick_ratio(sweep, [0.25, 0.5], [0, 1, 2]) == {}  # seed 2 missing


def test_smoke_run_end_to_end_then_report_only(tmp_path, run_script):
    out, cache = tmp_path / "photo.json", tmp_path / "cache"
    args = ["--smoke", "--jobs", "0", "--out", str(out), "--cache", str(cache)]
    run_script("photo_mra.py", *args)
    data = json.loads(out.read_text())
    rows = {r["name"]: r for r in data["rows"]}
    names = ["baseline_10pct", "cutmix_10pct", "mixup_10pct", "mra50_10pct", "oracle50_10pct"]
    assert [r["name"] for r in data["rows"]] == [*names, "mae_pretraining"]
    for name in names:
        r = rows[name]
        assert r["seeds"] == [0, 1] and len(r["top1_ci95"]) == 2 and "occluded_top1" in r
        if name != "baseline_10pct":
            assert r["top1_diff"]["baseline"] == "baseline_10pct"
    assert 0 < rows["mra50_10pct"]["fg_kept"] <= 1 and rows["oracle50_10pct"]["fg_kept"] > 0.9
    assert "fg_kept" not in rows["cutmix_10pct"]
    assert all(0 <= rows[n]["train_top1"] <= 100 for n in names)
    labels = data["settings"]["cutmix_labels"]
    assert set(labels) == {"photo-fmnist-mini", "fmnist-mini"}
    assert all(0 < v["label_error"] < 1 for v in labels.values())
    m = rows["mae_pretraining"]
    assert m["steps"] == 2 and m["test_psnr"] > 0 and m["knn_top1"] is not None
    assert m["selector_fg_kept"]["oracle"]["0.25"] == 1.0
    assert data["settings"]["selection"]["oracle_ratio"] == {"10pct": 0.5}
    assert list((cache / "data").glob("photo_items_fmnist-mini_*.pt"))
    assert list(cache.glob("mae_pretraining/*.run/mra_grid_oracle_r50.png"))
    # photo_mra_fit rebuilds a run's classifier from last.ckpt and reproduces its train_top1
    run = next((cache / "baseline_10pct").glob("*.json"))
    rec = json.loads(run.read_text())
    recorded = rec["metrics"].pop("train_top1")
    backup = run.read_text()
    run.write_text(json.dumps(rec))
    fit = tmp_path / "fit.json"
    run_script("photo_mra_fit.py", "--cache", str(cache), "--rows", "baseline",
               "--fractions", "10pct", "--seeds", str(rec["seed"]), "--out", str(fit))  # fmt: skip
    run.write_text(backup)
    [row] = json.loads(fit.read_text())["rows"]
    assert row["train_top1"] == round(recorded, 2) and row["name"] == "baseline_10pct"
    # everything is cached: a report-only pass rebuilds the same rows without running
    again = run_script("photo_mra.py", *args, "--report-only", timeout=300)
    assert " 0 to run" in again.stdout
    assert json.loads(out.read_text())["rows"] == data["rows"]
