"""The benchmark scripts on vislearn.bench: their CLI parses (``--help``), none imports another
through a ``sys.path`` edit, and the job tables give unique, stable keys (nothing is run)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SRC = BENCH.parent / "src"
# on the job runner; not (yet): dit_cache, dit_xl_timing and fmnist_ssl_speed (interleaved
# timing in one process)
SCRIPTS = [
    "fmnist_bingo_sage.py",
    "fmnist_csml_kscl.py",
    "fmnist_mra.py",
    "fmnist_semi.py",
    "fmnist_ssl.py",
    "fmnist_ssl_pipeline.py",
    "photo_mra.py",
    "seg_mdp.py",
    "video_fame.py",
    "vos_uvos.py",
]


def test_no_script_edits_sys_path_or_uses_run_pending():
    for name in SCRIPTS:
        text = (BENCH / name).read_text()
        assert "sys.path.insert" not in text, name
        assert "run_pending" not in text, name


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name):
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, str(BENCH / name), "--help"], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


@pytest.fixture
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def test_fmnist_job_tables_share_keys(bench_path):
    import fmnist_bingo_sage
    import fmnist_csml_kscl
    import fmnist_ssl

    a = argparse.Namespace(
        seeds=[0, 1, 2], methods=list(fmnist_ssl.METHODS), epochs=4, dataset="fmnist",
        joint_views=True, ablation_seeds=[0, 1, 2], frozen_seed=0, ssl_cache=Path("/tmp/ssl"),
        only=None, rows=["moco_v2", "kscl_k1", "kscl_k2_sym"], loss_scale_control=False,
    )  # fmt: skip
    ssl = fmnist_ssl.make_jobs(a)
    assert len({j.key for j in ssl}) == len(ssl) == 3 * (3 * 3 + 2)
    assert all(j.fn == "fmnist_ssl:run_job" for j in ssl)
    keys = {j.key for j in ssl}
    csml = fmnist_csml_kscl.make_jobs(a)
    assert {j.key for j in csml if j.name == "vislearn/moco_v2"} <= keys  # reused, not rerun
    assert sorted({j.name for j in csml}) == [
        "vislearn/kscl_k1",
        "vislearn/kscl_k2_sym",
        "vislearn/moco_v2",
    ]  # --rows
    assert {j.config["recipe"]["model"]["num_keys"] for j in csml if "kscl" in j.name} == {1, 2}
    stages = fmnist_bingo_sage.make_jobs(a, Path("/tmp/unused"))
    assert {j.key for j, _ in stages[0]} <= keys
    students = [j for st in stages[1:] for j, _ in st if "needs" in j.config]
    assert len(students) == 5 * 3  # every student recipe at every seed
    teacher = [j for j, _ in stages[1] if j.name == fmnist_bingo_sage.TEACHER]
    assert len(teacher) == 1 and teacher[0].seed == 0  # one frozen teacher for every seed
    needs = {j.config["needs"]["key"] for j in students}
    evaluator = next(j for j, _ in stages[0] if j.name == "vislearn/byol" and j.seed == 0)
    assert needs == {teacher[0].key, evaluator.key}
    assert [j.name for j, _ in stages[2]] == ["bingo"] * 3  # main rows before the ablations
    only_sage = fmnist_bingo_sage.make_jobs(argparse.Namespace(**{**vars(a), "only": ["sage"]}),
                                            Path("/tmp/unused"))  # fmt: skip
    assert [j.name for st in only_sage[1:] for j, _ in st] == ["sage"] * 3  # no teacher
    # the loss-scale control: lightly's BYOL at 2x lr and wd / 2, three more runs, new keys
    c = fmnist_ssl.make_jobs(argparse.Namespace(**{**vars(a), "loss_scale_control": True}))
    scaled = [j for j in c if j.name == fmnist_ssl.SCALED]
    assert len(c) == len(ssl) + 3 and [j.seed for j in scaled] == [0, 1, 2]
    m = scaled[0].config["recipe"]["model"]
    assert scaled[0].config["impl"] == "lightly" and (m["lr"], m["weight_decay"]) == (0.12, 0.00025)
    assert not {j.key for j in scaled} & keys
    # a changed recipe is a new key
    b = argparse.Namespace(**{**vars(a), "epochs": 5})
    assert not {j.key for j in fmnist_ssl.make_jobs(b)} & keys
