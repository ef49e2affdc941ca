"""benchmarks/vos_uvos.py: the job table (stages keyed on the jobs they depend on) and every
job run in-process on tiny videos with a tiny random ViT standing in for the DINO stage."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import vos_uvos
    import vos_uvos_jobs

    return vos_uvos, vos_uvos_jobs


def test_job_table_keys_follow_dependencies(bench, tmp_path):
    vos_uvos, jobs = bench
    cfg = vos_uvos.load_settings(smoke=False)
    dino, blocks, evals = vos_uvos.build_jobs(cfg, tmp_path)
    assert len(blocks) == len(cfg["block"]["seeds"]) >= 3
    seeds = len(cfg["block"]["seeds"])
    assert len(evals) == len(jobs.BLOCK_ROWS) * seeds + len(jobs.ROWS) - len(jobs.BLOCK_ROWS)
    assert len({(j.name, j.key) for j in evals}) == len(evals)
    assert all(j.config["dino_key"] == dino.key for j in [*blocks, *evals])
    ssl = [j for j in evals if j.name == "ssl_uvos"]
    assert {j.config["block_key"] for j in ssl} == {b.key for b in blocks}
    changed = copy.deepcopy(cfg)
    changed["dino"]["epochs"] += 1  # a new DINO: every block and every score is new
    dino2, blocks2, evals2 = vos_uvos.build_jobs(changed, tmp_path)
    assert dino2.key != dino.key
    assert not {b.key for b in blocks2} & {b.key for b in blocks}
    assert not {j.key for j in evals2} & {j.key for j in evals}
    grids = {row: vos_uvos.grid_of(cfg, row) for row in jobs.ROWS}
    assert max(grids["kmeans_keys"]) <= cfg["segment"]["max_objects"]  # strict DAVIS scoring


def test_block_and_eval_jobs_run_on_tiny_videos(bench, tmp_path):
    vos_uvos, jobs = bench
    from vislearn.models import create_backbone
    from vislearn.models.io import save_network

    cfg = vos_uvos.load_settings(smoke=True)
    cfg["videos"].update(size=24, frames=4, num_train=4, num_tune=2, num_test=2)
    cfg["block"].update(steps=2, batch_size=2)
    kwargs = {"in_chans": 3, "img_size": 24, "patch_size": 4}
    torch.manual_seed(0)
    save_network(create_backbone("vit_mini", **kwargs), tmp_path / jobs.WEIGHTS, "vit_mini", kwargs)
    _, (block,), evals = vos_uvos.build_jobs({**cfg, "block": {**cfg["block"], "seeds": [0]}},
                                             tmp_path)  # fmt: skip
    res = {"dino_dir": str(tmp_path)}
    ctx = {"run_dir": str(tmp_path / "block"), "resources": res}
    out = jobs.block_job(block.config, 0, ctx)
    assert out["steps"] == 2 and (tmp_path / "block" / "uvos" / "uvos_block.safetensors").is_file()
    records = []
    for job in evals:
        ctx = {"resources": {**res, "block_dir": str(tmp_path / "block")}}
        m = jobs.eval_job(job.config, job.seed, ctx)
        assert m["param"] in job.config["grid"] and len(m["per_video_jf"]) == 2
        assert 0 <= m["JF_mean"] <= 100
        records.append({"name": job.name, "seed": job.seed, "metrics": m})
    oracle = next(r for r in records if r["name"] == "token_oracle")["metrics"]
    assert oracle["JF_mean"] == max(r["metrics"]["JF_mean"] for r in records)
    rows = vos_uvos.summarise(records)
    assert [r["name"] for r in rows] == list(jobs.ROWS)
    assert "jf_diff" not in rows[0] and rows[1]["jf_diff"]["baseline"] == "ssl_uvos"
    assert len(rows[1]["jf_diff"]["ci95"]) == 2
    pairs = vos_uvos.paired(records)
    assert [(d["a"], d["b"]) for d in pairs] == list(vos_uvos.PAIRS)
