"""The one config loader (vislearn.core.config): recipe inheritance, overrides, strict keys,
and every recipe under configs/ resolving exactly as before recipes could inherit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vislearn.core.config import (
    DEFAULTS,
    flag_updates,
    lightning_count,
    load_config,
    load_recipe,
    parse_override,
    save_config,
)
from vislearn.core.errors import VislearnError
from vislearn.tasks.seg.config import SEG_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = Path(__file__).parent / "config_snapshots.json"
#: recipes read by benchmarks directly (no built-in defaults under them)
RAW = ("dit_cache/", "vos_synth/uvos.yaml")


def _resolve(rel: str) -> dict:
    path = ROOT / "configs" / rel
    if rel.startswith(RAW):
        return load_recipe(path)
    return load_config(path, defaults=SEG_DEFAULTS if rel.startswith("seg_mdp/") else None)


def test_every_recipe_resolves_as_in_the_snapshot():
    """The snapshot was written with the loader before inheritance, from the original
    (self-contained) recipes; the base recipes (configs/base/) are not runnable recipes."""
    snapshot = json.loads(SNAPSHOTS.read_text())
    recipes = sorted(
        p.relative_to(ROOT / "configs").as_posix() for p in ROOT.glob("configs/**/*.yaml")
    )
    assert set(snapshot) <= set(recipes)
    for rel in recipes:
        if rel not in snapshot:
            assert rel.startswith("base/"), f"{rel}: new recipe, not in the snapshot"
            continue
        # JSON has no tuples: compare through a JSON round trip
        assert json.loads(json.dumps(_resolve(rel))) == snapshot[rel], rel


def _write(path: Path, data: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_inheritance_chain_relative_paths_and_list_replacement(tmp_path):
    _write(tmp_path / "bases/root.yaml", {"model": {"lr": 0.1, "crop_scale": [0.2, 1.0]},
                                          "data": {"batch_size": 64}})  # fmt: skip
    _write(tmp_path / "bases/mid.yaml", {"defaults": ["root.yaml"], "model": {"temperature": 0.2}})
    _write(tmp_path / "other.yaml", {"trainer": {"max_epochs": 3}})
    leaf = _write(
        tmp_path / "recipes/leaf.yaml",
        {"defaults": ["../bases/mid.yaml", "../other.yaml"], "method": "simclr",
         "model": {"crop_scale": [0.5, 1.0]}, "data": {"batch_size": 32}},
    )  # fmt: skip
    cfg = load_config(leaf)
    assert cfg["method"] == "simclr"
    assert cfg["model"] == {"lr": 0.1, "crop_scale": [0.5, 1.0], "temperature": 0.2}
    assert cfg["data"]["batch_size"] == 32 and cfg["trainer"]["max_epochs"] == 3
    assert cfg["data"]["dataset"] == DEFAULTS["data"]["dataset"]  # the built-in defaults below
    assert "defaults" not in cfg
    # a single string is accepted too; a later base wins over an earlier one
    _write(tmp_path / "a.yaml", {"model": {"lr": 1}})
    _write(tmp_path / "b.yaml", {"model": {"lr": 2}})
    two = _write(tmp_path / "two.yaml", {"defaults": ["a.yaml", "b.yaml"]})
    assert load_config(two)["model"]["lr"] == 2
    one = _write(tmp_path / "one.yaml", {"defaults": "a.yaml"})
    assert load_config(one)["model"]["lr"] == 1


def test_inheritance_cycle_and_bad_bases_are_one_line_errors(tmp_path):
    _write(tmp_path / "x.yaml", {"defaults": ["y.yaml"]})
    _write(tmp_path / "y.yaml", {"defaults": ["x.yaml"]})
    with pytest.raises(VislearnError, match="cycle") as exc:
        load_config(tmp_path / "x.yaml")
    assert "\n" not in str(exc.value)
    _write(tmp_path / "self.yaml", {"defaults": ["self.yaml"]})
    with pytest.raises(VislearnError, match="cycle"):
        load_config(tmp_path / "self.yaml")
    _write(tmp_path / "missing.yaml", {"defaults": ["nope.yaml"]})
    with pytest.raises(VislearnError, match="not found.*nope.yaml"):
        load_config(tmp_path / "missing.yaml")
    _write(tmp_path / "badlist.yaml", {"defaults": [{"a": 1}]})
    with pytest.raises(VislearnError, match="defaults"):
        load_config(tmp_path / "badlist.yaml")
    # a diamond is not a cycle
    _write(tmp_path / "d0.yaml", {"model": {"lr": 1}})
    _write(tmp_path / "d1.yaml", {"defaults": ["d0.yaml"]})
    _write(tmp_path / "d2.yaml", {"defaults": ["d0.yaml"]})
    _write(tmp_path / "d3.yaml", {"defaults": ["d1.yaml", "d2.yaml"]})
    assert load_config(tmp_path / "d3.yaml")["model"]["lr"] == 1


def test_unknown_keys_bad_yaml_and_non_mappings(tmp_path):
    with pytest.raises(VislearnError, match=r"'data.nope'.*known: dataset"):
        load_config(None, ["data.nope=1"])
    with pytest.raises(VislearnError, match="unknown config section 'nosection'"):
        load_config(None, ["nosection.key=1"])
    base = _write(tmp_path / "base.yaml", {"trainer": {"max_epoch": 3}})  # typo in a base
    leaf = _write(tmp_path / "leaf.yaml", {"defaults": ["base.yaml"]})
    with pytest.raises(VislearnError, match="trainer.max_epoch"):
        load_config(leaf)
    assert load_recipe(base) == {"trainer": {"max_epoch": 3}}  # unchecked without defaults
    with pytest.raises(VislearnError, match="invalid YAML"):
        load_config(_write(tmp_path / "bad.yaml", "model: [unclosed"))
    with pytest.raises(VislearnError, match="must be a mapping"):
        load_config(_write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(VislearnError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(VislearnError, match="section.key=value"):
        load_config(None, ["no_equals_sign"])
    # model.* is open (method keyword arguments)
    assert load_config(None, ["model.anything=1"])["model"] == {"anything": 1}


def test_override_parsing():
    assert parse_override("model.backbone_kwargs={stem: small_ds, width: 8}") == {
        "model": {"backbone_kwargs": {"stem": "small_ds", "width": 8}}
    }
    cfg = load_config(
        None,
        ["model.backbone_kwargs={stem: small_ds}", "data.image_size=", "trainer.devices=2",
         "eval.retrieval_ks=[1, 3]", "trainer.progress=false", "model.lr=0.001", "out=x"],
    )  # fmt: skip
    assert cfg["model"] == {"backbone_kwargs": {"stem": "small_ds"}, "lr": 0.001}
    assert cfg["data"]["image_size"] is None and cfg["trainer"]["devices"] == 2
    assert cfg["eval"]["retrieval_ks"] == [1, 3]  # lists replaced, not merged
    assert cfg["trainer"]["progress"] is False and cfg["out"] == "x"
    # precedence: defaults <- recipe <- updates (flags) <- overrides
    cfg = load_config(None, ["trainer.max_epochs=7"], trainer={"max_epochs": 5, "devices": 1})
    assert cfg["trainer"]["max_epochs"] == 7 and cfg["trainer"]["devices"] == 1


def test_flag_updates_and_save_config(tmp_path):
    from argparse import Namespace

    args = Namespace(epochs=3, lr=None, devices="2", backbone="resnet18", no_aug=True)
    up = flag_updates(
        args,
        {"epochs": "trainer.max_epochs", "lr": "model.lr", "backbone": "model.backbone",
         "devices": ("trainer.devices", lightning_count),
         "no_aug": ("model.augment", lambda v: not v),
         "absent": "data.dataset"},
    )  # fmt: skip
    assert up == {"trainer": {"max_epochs": 3, "devices": 2},
                  "model": {"backbone": "resnet18", "augment": False}}  # fmt: skip
    cfg = load_config(None, **up)
    save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == cfg
    assert lightning_count("auto") == "auto" and lightning_count(4) == 4
