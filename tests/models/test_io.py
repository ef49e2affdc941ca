"""The one network loader / writer (vislearn.models.io.load_network / save_network) and the one
safetensors writer (vislearn.core.artifacts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vislearn.core.artifacts import read_safetensors_metadata, write_safetensors
from vislearn.core.errors import VislearnError
from vislearn.models import create_backbone
from vislearn.models.io import load_network, network_spec, save_network
from vislearn.models.mae import MaskedAutoencoder, build_mae, load_mae, save_mae
from vislearn.models.segmentation import SegmentationNet
from vislearn.models.state_dict import read_state_file

RESNET = {"in_chans": 1, "stem": "small_ds", "width": 8}
VIT = {"in_chans": 3, "img_size": 32, "patch_size": 8}
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k, v in sa.items():
        assert torch.equal(v, sb[k]), k


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg, msg
    return msg


# ---- core.artifacts ------------------------------------------------------------------------------
def test_write_safetensors_round_trips_metadata(tmp_path):
    t = torch.arange(12.0).view(3, 4).t()  # not contiguous
    path = write_safetensors(
        tmp_path / "sub" / "x.safetensors",
        {"t": t},
        {"name": "resnet18", "n": 3, "kw": {"a": [1, 2]}, "flag": True, "none": None},
    )
    assert [p.name for p in path.parent.iterdir()] == ["x.safetensors"]  # no temp file left
    meta = read_safetensors_metadata(path)
    assert meta == {"name": "resnet18", "n": 3, "kw": {"a": [1, 2]}, "flag": True}
    assert read_safetensors_metadata(path, decode=False)["kw"] == '{"a": [1, 2]}'
    assert torch.equal(read_state_file(path)["t"], t)
    with pytest.raises(VislearnError, match="not found"):
        read_safetensors_metadata(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(64))
    with pytest.raises(VislearnError, match="cannot read safetensors") as err:
        read_safetensors_metadata(bad)
    _one_line(err)


def test_only_artifacts_calls_save_file():
    root = Path(SRC) / "vislearn"
    hits = [p for p in root.rglob("*.py") if "save_file(" in p.read_text()]
    assert [p.relative_to(root).as_posix() for p in hits] == ["core/artifacts.py"]


# ---- files written by save_network rebuild alone -------------------------------------------------
def test_backbone_file_rebuilds_alone(tmp_path):
    torch.manual_seed(0)
    bb = create_backbone("resnet_tiny", **RESNET)
    path = save_network(bb, tmp_path / "bb.safetensors", "resnet_tiny", RESNET, {"method": "x"})
    meta = read_safetensors_metadata(path)
    assert meta["network"] == "resnet_tiny" and meta["network_kwargs"] == RESNET
    assert meta["method"] == "x"
    _same(load_network(path), bb)
    _same(load_network(path, "backbone"), bb)
    with pytest.raises(VislearnError, match="not a 'mae'"):
        load_network(path, "mae")


def test_mae_file_rebuilds_alone(tmp_path):
    torch.manual_seed(0)
    layout = dict(
        backbone="vit_mini",
        backbone_kwargs={"img_size": 32, "patch_size": 8},
        in_chans=3,
        decoder={"dim": 16, "depth": 1, "num_heads": 2},
        norm_pix=False,
    )
    mae = build_mae(**{k: v for k, v in layout.items() if k != "norm_pix"})
    save_mae(mae.state_dict(), tmp_path / "mae.safetensors", **layout)
    loaded = load_network(tmp_path / "mae.safetensors")
    assert isinstance(loaded, MaskedAutoencoder)
    _same(loaded, mae)
    frozen = load_mae(tmp_path / "mae.safetensors")
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())


def test_mae_and_backbone_from_a_lightning_checkpoint(tmp_path):
    torch.manual_seed(0)
    mae = build_mae("vit_mini", {"img_size": 32, "patch_size": 8}, 3, {"dim": 16, "depth": 1})
    state = {f"backbone.{k}": v for k, v in mae.encoder.state_dict().items()}
    state |= {f"decoder.{k}": v for k, v in mae.decoder.state_dict().items()}
    hp = {
        "backbone": "vit_mini",
        "backbone_kwargs": {"img_size": 32, "patch_size": 8},
        "in_chans": 3,
        "decoder_dim": 16,
        "decoder_depth": 1,
        "decoder_heads": 4,
    }
    torch.save({"state_dict": state, "hyper_parameters": hp, "epoch": 1}, tmp_path / "last.ckpt")
    _same(load_network(tmp_path / "last.ckpt", "mae"), mae)
    _same(load_network(tmp_path / "last.ckpt"), mae.encoder)  # the backbone by default
    assert network_spec(tmp_path / "last.ckpt").arch == "vit_mini"


def test_segmentation_net_file_rebuilds_alone(tmp_path):
    torch.manual_seed(0)
    net = SegmentationNet(
        [3, 5], "resnet_tiny", {"stem": "small_ds", "width": 8}, 1, "fcn", 8, head_channels=16
    )
    path = save_network(net, tmp_path / "seg.safetensors", "segmentation_net", net.arch_kwargs())
    loaded = load_network(path)
    assert isinstance(loaded, SegmentationNet) and loaded.num_classes == [3, 5]
    _same(loaded, net)


def test_block_and_classifier_files_rebuild_in_a_fresh_process(tmp_path):
    """Nothing imported beforehand: the file names the vislearn module that registers its
    network. Also: models.frozen imports nothing of vislearn.tasks (the old import cycle)."""
    from vislearn.tasks.dit.fid import FeatureClassifier, save_classifier
    from vislearn.tasks.vos.block import SpatioTemporalBlock
    from vislearn.tasks.vos.run import save_block

    torch.manual_seed(0)
    block = SpatioTemporalBlock(32, 4)
    save_block(block, tmp_path / "block.safetensors", info={"step": 1})
    clf = FeatureClassifier(3, backbone_kwargs={"stem": "small_ds", "width": 8})
    save_classifier(clf, tmp_path / "clf.safetensors", test_top1=50.0)
    torch.save({"block": block.state_dict(), "clf": clf.state_dict()}, tmp_path / "ref.pt")
    code = f"""
import sys, torch
import vislearn.models.frozen
assert not [m for m in sys.modules if m.startswith("vislearn.tasks")], "frozen imports tasks"
from vislearn.models.io import load_network
ref = torch.load({str(tmp_path / "ref.pt")!r}, weights_only=True)
for name, kind in (("block", "uvos_block"), ("clf", "fd_classifier")):
    net = load_network({str(tmp_path)!r} + f"/{{name}}.safetensors", kind)
    got = net.state_dict()
    assert got.keys() == ref[name].keys()
    assert all(torch.equal(got[k], v) for k, v in ref[name].items())
    print(type(net).__name__)
"""
    env = {**os.environ, "PYTHONPATH": SRC}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["SpatioTemporalBlock", "FeatureClassifier"]


# ---- external layouts ----------------------------------------------------------------------------
def _timm_names(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        k = k.replace("patch_embed.", "patch_embed.proj.", 1) if k.startswith("patch_embed.") else k
        out[k.replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.2.", ".mlp.fc2.")] = v
    return out


@pytest.mark.parametrize(
    "layout", ["plain", "module", "backbone", "lightning", "timm", "dino_teacher", "dino_student"]
)
def test_external_layouts_load(tmp_path, layout):
    torch.manual_seed(0)
    vit = create_backbone("vit_mini", **VIT)
    sd = vit.state_dict()
    other = {k: torch.randn_like(v) for k, v in sd.items()}
    nested = None
    obj = {
        "plain": sd,
        "module": {f"module.{k}": v for k, v in sd.items()},
        "backbone": {f"backbone.{k}": v for k, v in sd.items()},
        "lightning": {"state_dict": {f"backbone.{k}": v for k, v in sd.items()}, "epoch": 3},
        "timm": _timm_names(sd),
    }.get(layout)
    if layout.startswith("dino"):  # DINO's full checkpoint: teacher and student, with heads
        teacher, student = (sd, other) if layout == "dino_teacher" else (other, sd)
        obj = {
            "teacher": {f"backbone.{k}": v for k, v in teacher.items()}
            | {"head.last_layer.weight": torch.zeros(4, 2)},
            "student": {f"module.backbone.{k}": v for k, v in student.items()},
            "epoch": 10,
        }
        nested = "student" if layout == "dino_student" else None
    torch.save(obj, tmp_path / "w.pth")
    loaded = load_network(tmp_path / "w.pth", arch="vit_mini", arch_kwargs=VIT, nested=nested)
    _same(loaded, vit)
    with pytest.raises(VislearnError, match="does not say which network"):
        load_network(tmp_path / "w.pth")


def test_external_safetensors_with_prefix(tmp_path):
    torch.manual_seed(0)
    bb = create_backbone("resnet_tiny", **RESNET)
    write_safetensors(
        tmp_path / "x.safetensors", {f"module.{k}": v for k, v in bb.state_dict().items()}
    )
    _same(load_network(tmp_path / "x.safetensors", arch="resnet_tiny", arch_kwargs=RESNET), bb)


# ---- unsafe and broken files ---------------------------------------------------------------------
def _mark(path: str) -> None:  # what the payload would run
    Path(path).write_text("ran")


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_mark, (self.marker,))


@pytest.mark.parametrize("nested", [False, True])
def test_pickle_payload_is_refused_in_one_line(tmp_path, nested):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.pt"
    sd = create_backbone("resnet_tiny", **RESNET).state_dict()
    torch.save({"state_dict": sd, "x": Payload(marker)} if nested else Payload(marker), path)
    for call in (
        lambda: load_network(path),
        lambda: load_network(path, arch="resnet_tiny", arch_kwargs=RESNET),
        lambda: read_state_file(path),
    ):
        with pytest.raises(VislearnError, match="refusing to load") as err:
            call()
        msg = _one_line(err)
        assert "_mark" in msg and "weights_only=True" in msg  # the global it would call
    assert not marker.exists(), "the pickled payload ran"


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "text"])
@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".safetensors"])
def test_broken_files_give_one_line(tmp_path, damage, suffix):
    good = tmp_path / f"good{suffix}"
    sd = create_backbone("resnet_tiny", **RESNET).state_dict()
    if suffix == ".safetensors":
        write_safetensors(good, sd, {"network": "resnet_tiny", "network_kwargs": RESNET})
    else:
        torch.save({"state_dict": sd}, good)
    data = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "random": os.urandom(4096),
            "empty": b"",
            "text": b"not a checkpoint at all",
        }[damage]
    )
    with pytest.raises(VislearnError, match="cannot read") as err:
        load_network(bad, arch="resnet_tiny", arch_kwargs=RESNET)
    _one_line(err)
    with pytest.raises(VislearnError, match="not found"):
        load_network(tmp_path / f"missing{suffix}")
