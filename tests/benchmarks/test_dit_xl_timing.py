"""benchmarks/dit_xl_timing.py (the DiT-XL/2-sized GPU latency benchmark) on its tiny model."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_thread")

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "dit_xl_timing.py"


def test_tiny_run_writes_every_setting(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("dit_xl_timing", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "t.json"
    argv = ["x", "--tiny", "--device", "cpu", "--dtype", "fp32", "--steps", "4"]
    monkeypatch.setattr(sys, "argv", argv + ["--repeats", "1", "--no-flops", "--out", str(out)])
    mod.main()
    data = json.loads(out.read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["none"]["speedup_wall"] == 1.0
    assert rows["none"]["steps"]["full"] == 4
    # N = 3 over 4 steps: F C A F
    assert rows["vislearn/duca_n3"]["steps"] == {
        "full": 2, "conservative": 1, "aggressive": 1, "reuse": 0,
    }  # fmt: skip
    assert rows["vislearn/fora_n3"]["steps"]["reuse"] == 2
    assert data["settings"]["model"]["num_layers"] == 2
    assert all(len(r["seconds_per_round"]) == 1 for r in rows.values())
