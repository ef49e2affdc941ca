"""benchmarks/gpu_suite.py end to end on the CPU with ``--tiny`` settings (< 60 s): every
section runs and the result file names the device."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("lightly")
pytestmark = pytest.mark.usefixtures("single_thread")
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_tiny_suite_on_cpu(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_suite

    out = tmp_path / "gpu_suite.json"
    doc = gpu_suite.main(["--tiny", "--workers", "0", "--out", str(out)])
    assert json.loads(out.read_text())["device"] == doc["device"]
    sections = doc["sections"]
    assert all("error" not in s for s in sections.values()), sections
    names = {r["name"] for r in sections["ssl_throughput"]["rows"]}
    assert {"vislearn/moco_v2", "lightly_pipeline/moco_v2", "vislearn/byol"} <= names
    ratio = {r["name"]: r for r in sections["ssl_throughput"]["rows"]}["vislearn/simclr"]
    assert ratio["speed_ratio_vs_lightly_pipeline"] > 0
    assert {r["name"] for r in sections["dit_xl_timing"]["rows"]} >= {"none"}
    fm = {r["name"]: r for r in sections["fmnist_methods"]["rows"]}
    assert set(fm) == {"vislearn/moco_v2", "vislearn/csml", "vislearn/byol", "vislearn/sage"}
    assert fm["vislearn/sage"].get("online_knn_top1") is not None
    for mod in ("gpu_suite", "fmnist_ssl_pipeline", "dit_xl_timing", "lightly_methods"):
        sys.modules.pop(mod, None)
