"""The step speed-ups keep results: the fused EMA and the sync-free queue are bitwise equal to
the plain per-tensor code; channels-last training equals the contiguous layout to float
rounding; ``compile=True`` trains (inductor, skipped when compiling takes over 60 s)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from vislearn.data.datamodule import ImageDataModule
from vislearn.engine import build_trainer
from vislearn.engine.momentum import ema_update, momentum_copy
from vislearn.engine.queue import MemoryQueue
from vislearn.tasks.ssl.methods import build_method

pytestmark = pytest.mark.usefixtures("single_thread")
TINY = {"backbone": "resnet_tiny", "backbone_kwargs": {"stem": "small_ds", "width": 8},
        "proj_hidden_dim": 32, "queue_size": 64}  # fmt: skip


@torch.no_grad()
def _loop_ema(online: nn.Module, target: nn.Module, m: float) -> None:
    """The reference: one lerp_ per parameter, one copy_ per buffer."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o, 1.0 - m)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        t.copy_(o)


def test_fused_ema_bitwise_equal_to_loop_and_survives_format_change():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    online(torch.randn(2, 1, 6, 6))
    a, b = momentum_copy(online), momentum_copy(online)
    opt = torch.optim.SGD(online.parameters(), lr=0.1)
    for step in range(4):
        online(torch.randn(8, 1, 6, 6)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ema_update(online, a, 0.9)
        _loop_ema(online, b, 0.9)
        if step == 1:  # the cached lists stay valid when .data is replaced
            for t in (*online.parameters(), *a.parameters(), *b.parameters()):
                if t.dim() == 4:
                    t.data = t.data.contiguous(memory_format=torch.channels_last)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    assert not torch.equal(a[0].weight, online[0].weight)


def test_queue_without_host_sync_is_the_ring_buffer():
    torch.manual_seed(0)
    q = MemoryQueue(10, 4)
    ref = q.queue.clone()
    ptr = 0
    for n in (3, 4, 6, 12):
        keys = torch.randn(n, 4)
        q.enqueue(keys)
        new = nn.functional.normalize(keys, dim=1)[-10:]
        for t in range(new.shape[0]):
            ref[(ptr + t) % 10] = new[t]
        ptr = (ptr + new.shape[0]) % 10
        assert torch.equal(q.queue, ref) and int(q.ptr) == ptr


def _fit_moco(tmp_path, steps: int = 3, **kw) -> nn.Module:
    L.seed_everything(0, verbose=False)
    model = build_method("moco_v2", **TINY, **kw)
    trainer = build_trainer(tmp_path, max_epochs=1, limit_train_batches=steps, progress=False,
                            accelerator="cpu", devices=1,
                            check_val_every_n_epoch=10**6)  # fmt: skip
    trainer.fit(model, datamodule=ImageDataModule(batch_size=32, knn_bank_size=200))
    return model


def test_channels_last_equals_contiguous_to_float_rounding(tmp_path):
    cl = _fit_moco(tmp_path / "cl", channels_last=True)
    plain = _fit_moco(tmp_path / "plain", channels_last=False)
    for (k, x), y in zip(cl.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=k)
        assert x.is_contiguous(), f"{k} not given back in contiguous format"


def test_compile_inductor_trains(tmp_path):
    """``compile=True`` with inductor on the CPU, in a subprocess (skipped past 60 s)."""
    script = textwrap.dedent(f"""
        import torch, lightning as L
        torch.set_num_threads(1)
        from vislearn.data.datamodule import ImageDataModule
        from vislearn.engine import build_trainer
        from vislearn.tasks.ssl.methods import build_method
        out = {str(tmp_path)!r}
        res = []
        for compile in (False, True):
            L.seed_everything(0, verbose=False)
            m = build_method("moco_v2", compile=compile, channels_last=False, **{TINY!r})
            t = build_trainer(out + str(compile), max_epochs=1, limit_train_batches=2,
                              progress=False, accelerator="cpu", devices=1,
                              check_val_every_n_epoch=10**6)
            t.fit(m, datamodule=ImageDataModule(batch_size=32, knn_bank_size=200))
            res.append(m.backbone.state_dict())
        for k in res[0]:
            torch.testing.assert_close(res[0][k], res[1][k], rtol=1e-3, atol=1e-4)
        print("COMPILED_OK")
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    try:
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=60, env=env)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("torch.compile (inductor) took over 60 s on this machine")
    if r.returncode != 0 and "C++ compile error" in r.stderr + r.stdout:
        pytest.skip("no working C++ compiler for inductor")
    assert "COMPILED_OK" in r.stdout, r.stderr[-3000:]
