"""Backbones (registry, shapes, stage maps, gradients), heads and local weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from vislearn.core.errors import VislearnError
from vislearn.models import MLPHead, create_backbone, list_backbones, load_weights, read_state_file

TINY_RESNET = {"stem": "small_ds", "width": 8}
pytestmark = pytest.mark.usefixtures("single_thread")

# Full-width models are slow on 2 CPU cores; the gradient test runs ResNets at width 8 (same
# block structure) and ViTs at 28 px / patch 4. Default sizes are checked on the meta device.
SMALL_KWARGS = {
    "resnet_tiny": TINY_RESNET,
    "resnet18": {"width": 8},
    "resnet34": {"width": 8},
    "resnet50": {"width": 8},
}
# 22 M / 86 M parameters: structure checked on meta (dino_*: in test_dino.py)
META_ONLY = {"vit_small", "vit_base", "dino_vits8", "dino_vits16", "dino_vitb8", "dino_vitb16"}


def _build(name: str, **kwargs) -> nn.Module:
    if name.startswith("vit"):
        kwargs = {"img_size": 28, "patch_size": 4, **kwargs}
    return create_backbone(name, in_chans=1, **{**SMALL_KWARGS.get(name, {}), **kwargs})


def test_registry_lists_the_core_backbones():
    names = list_backbones()
    for name in ("resnet_tiny", "resnet18", "resnet50", "vit_mini", "vit_tiny"):
        assert name in names
    assert list_backbones("vit_*") == sorted(n for n in names if n.startswith("vit_"))
    with pytest.raises(VislearnError, match="unknown backbone"):
        create_backbone("no_such_net")
    with pytest.raises(VislearnError, match="resnet_tiny"):
        create_backbone("resnet_tiny", no_such_kwarg=1)


@pytest.mark.parametrize("name", list_backbones(modality="image"))  # video: test_video_methods
def test_backbone_shapes_stages_and_gradients(name):
    if name in META_ONLY:
        pytest.skip("large ViT: checked on the meta device in test_default_sizes_*")
    torch.manual_seed(0)
    model = _build(name).train()
    batch = 2  # BatchNorm needs more than one value per channel at 1x1 maps
    x = torch.randn(batch, 1, 28, 28)
    out = model(x)
    assert out.shape == (batch, model.num_features)
    assert torch.isfinite(out).all()
    pooled, maps = model.forward_features(x, return_stages=True)
    torch.testing.assert_close(pooled, out)
    assert len(maps) == len(model.stage_channels)
    for fmap, channels in zip(maps, model.stage_channels, strict=True):
        assert fmap.dim() == 4 and fmap.shape[:2] == (batch, channels)
    # a loss touching the pooled output and every stage map
    loss = out.square().mean() + sum(m.square().mean() for m in maps)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient in {pname}"


def _n_params(model: nn.Module, skip: str | None = None) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not (skip and n.startswith(skip)))


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_default_sizes_resnet_match_torchvision(name):
    import torchvision

    with torch.device("meta"):  # no memory, no init cost
        ours = create_backbone(name, in_chans=3)
        ref = getattr(torchvision.models, name)()
    assert _n_params(ours) == _n_params(ref, skip="fc.")
    assert ours.num_features == ref.fc.in_features
    assert ours.stage_channels[-1] == ours.num_features


def _vit_params(dim: int, depth: int, patch: int = 16, chans: int = 3, tokens: int = 197) -> int:
    """Parameter count of a pre-norm ViT with qkv bias and MLP ratio 4, written out by hand."""
    block = 2 * 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim)
    block += (dim * 4 * dim + 4 * dim) + (4 * dim * dim + dim)
    embed = patch * patch * chans * dim + dim + dim + tokens * dim  # conv, cls, pos
    return embed + depth * block + 2 * dim


@pytest.mark.parametrize(
    ("name", "dim", "depth"), [("vit_tiny", 192, 12), ("vit_small", 384, 12), ("vit_base", 768, 12)]
)
def test_default_sizes_vit(name, dim, depth):
    with torch.device("meta"):
        model = create_backbone(name)
    assert model.num_features == dim
    assert model.stage_channels == [dim] * depth
    assert _n_params(model) == _vit_params(dim, depth)


def test_vit_interpolates_positions_for_other_sizes():
    model = create_backbone("vit_mini", in_chans=1, img_size=28, patch_size=4)
    with torch.no_grad():
        out, maps = model.forward_features(torch.randn(2, 1, 36, 36), return_stages=True)
    assert out.shape == (2, 128)
    assert maps[0].shape == (2, 128, 9, 9)


@pytest.mark.parametrize(
    ("kwargs", "n_linear", "n_bn"),
    [
        ({}, 2, 1),
        ({"batch_norm": False}, 2, 0),
        ({"num_layers": 3, "last_bn": True}, 3, 3),
        ({"num_layers": 1}, 1, 0),
    ],
)
def test_mlp_head_shapes(kwargs, n_linear, n_bn):
    head = MLPHead(12, 20, 6, **kwargs)
    out = head(torch.randn(5, 12))
    assert out.shape == (5, 6)
    mods = list(head.modules())
    assert sum(isinstance(m, nn.Linear) for m in mods) == n_linear
    assert sum(isinstance(m, nn.BatchNorm1d) for m in mods) == n_bn


# ---- weight loading -------------------------------------------------------------------------
def _source_model() -> nn.Module:
    torch.manual_seed(1)
    model = create_backbone("resnet_tiny", in_chans=1, **TINY_RESNET)
    model.train()
    with torch.no_grad():  # move BatchNorm running statistics away from their init
        model(torch.randn(4, 1, 28, 28) * 3 + 1)
    return model


def _fresh_model(width: int = 8) -> nn.Module:
    torch.manual_seed(2)
    return create_backbone("resnet_tiny", in_chans=1, stem="small_ds", width=width)


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


LAYOUTS = {
    "plain": lambda sd: sd,
    "state_dict_module": lambda sd: {"state_dict": _prefixed(sd, "module."), "epoch": 3},
    "dino_teacher": lambda sd: {
        "teacher": {
            **_prefixed(sd, "backbone."),
            "head.mlp.0.weight": torch.zeros(4, 4),  # a DINO head: ignored
        },
        "student": {"backbone.stem.0.weight": torch.zeros(1)},
        "epoch": 100,
    },
    "model": lambda sd: {"model": sd, "optimizer": {"state": {}}},
    # a vislearn/Lightning .ckpt: weights under "state_dict" next to top-level tensors (the
    # augmentation RNG state) and a momentum copy whose keys also end in the backbone's names
    "lightning_ckpt": lambda sd: {
        "state_dict": {
            **_prefixed(sd, "backbone."),
            **_prefixed({k: torch.zeros_like(v) for k, v in sd.items()}, "momentum_backbone."),
            "projector.net.0.weight": torch.zeros(4, 4),
        },
        "augment_rng": torch.zeros(16, dtype=torch.uint8),
        "epoch": 1,
        "hyper_parameters": {"backbone": "resnet_tiny"},
    },
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_load_weights_torch_layouts(tmp_path, layout):
    src = _source_model()
    path = tmp_path / f"{layout}.pth"
    torch.save(LAYOUTS[layout](src.state_dict()), path)
    dst = _fresh_model()
    assert not torch.equal(dst.stem[0].weight, src.stem[0].weight)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")  # unexpected head keys may warn
        load_weights(dst, path)
    _assert_same_state(src, dst)


def test_load_weights_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = _source_model()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = _fresh_model()
    load_weights(dst, path)
    _assert_same_state(src, dst)
    assert set(read_state_file(path)) == set(src.state_dict())


def test_wrong_architecture_names_shapes(tmp_path):
    path = tmp_path / "w8.pth"
    torch.save(_source_model().state_dict(), path)
    with pytest.raises(VislearnError, match="shape mismatch") as err:
        load_weights(_fresh_model(width=16), path)
    assert "file (8,) vs model (16,)" in str(err.value)


def test_missing_keys_are_named(tmp_path):
    sd = _source_model().state_dict()
    del sd["stages.2.0.bn2.weight"]
    del sd["stages.2.0.bn2.bias"]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(VislearnError, match="missing 2 keys") as err:
        load_weights(_fresh_model(), path)
    assert "stages.2.0.bn2.weight" in str(err.value)
    assert "stages.2.0.bn2.bias" in str(err.value)
    model = _fresh_model()
    load_weights(model, path, strict=False)  # non-strict loads what is there
    torch.testing.assert_close(model.stem[0].weight, sd["stem.0.weight"])


def test_no_matching_key(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(VislearnError, match="no key matches"):
        load_weights(_fresh_model(), path)


def _write_marker(path: str) -> None:
    Path(path).write_text("executed")


class Payload:
    """Unpickling this calls ``_write_marker``: a stand-in for arbitrary code in a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


@pytest.mark.parametrize("nested", [False, True])
def test_pickled_object_is_refused_not_executed(tmp_path, nested):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    obj = Payload(marker)
    torch.save({"state_dict": {"stem.0.weight": torch.zeros(1)}, "x": obj} if nested else obj, path)
    assert not marker.exists()
    with pytest.raises(VislearnError, match="weights_only"):
        read_state_file(path)
    with pytest.raises(VislearnError):
        load_weights(_fresh_model(), path)
    assert not marker.exists(), "the pickled payload was executed"


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(VislearnError, match="not found"):
        load_weights(_fresh_model(), tmp_path / "nope.pth")
    with pytest.raises(VislearnError, match="not found"):
        read_state_file(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(VislearnError, match="safetensors"):
        load_weights(_fresh_model(), bad)
    bad_pt = tmp_path / "bad.pth"
    bad_pt.write_bytes(b"not a zip")
    with pytest.raises(VislearnError, match="cannot read"):
        load_weights(_fresh_model(), bad_pt)
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(VislearnError, match="not a state_dict"):
        read_state_file(tensor_only)
