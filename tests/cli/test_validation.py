"""Bad settings are one-line errors (exit status 2) found before anything is written or
rendered; checkpoints remember their training data set; messages and help texts are right."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vislearn.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=ROOT, **kwargs
    )


def _rejected(capsys, argv: list[str], out: Path, expect: str) -> None:
    assert main([*argv, "--out", str(out)]) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vislearn: error: "), (argv, err)
    assert expect in err[0], (argv, err)
    assert not out.exists(), argv


def test_bad_pretrain_values_are_rejected_before_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    too_many = str((os.cpu_count() or 1) + 1)
    cases = [
        (["--epochs", "0"], "trainer.max_epochs must be >= 1"),
        (["--batch-size", "0"], "data.batch_size must be >= 1"),
        (["--batch-size", "-5"], "data.batch_size must be >= 1"),
        (["--lr", "0"], "model.lr must be > 0"),
        (["model.lr=abc"], "model.lr must be a number"),
        (["trainer.max_epochs=abc"], "trainer.max_epochs must be an integer"),
        (["data.batch_size=abc"], "data.batch_size must be an integer"),
        (["model.temperature=abc"], "model.temperature must be a number"),
        (["model.temperature=-1"], "model.temperature must be > 0"),
        (["model.no_such_key=1"], "unknown config key 'model.no_such_key'"),
        (["data.image_size=0"], "data.image_size must be >= 1"),
        (["data.channels=2"], "data.channels must be one of 1, 3"),
        (["--precision", "13-bogus"], "unknown precision '13-bogus'"),
        (["--accelerator", "cpu", "--devices", too_many], f"asks for {too_many} processes"),
    ]
    import torch

    if not torch.cuda.is_available():
        cases.append((["--accelerator", "gpu"], "no CUDA GPU"))
    for extra, expect in cases:
        _rejected(capsys, ["pretrain", "moco_v2", *extra], out, expect)
    for extra, expect in (
        (["--epochs", "0"], "trainer.max_epochs must be >= 1"),
        (["--lr", "-1"], "model.lr must be > 0"),
        (["--occlusion-fill", "300"], "eval.occlusion_fill must be in [0, 255]"),
    ):
        _rejected(capsys, ["train-classifier", *extra], out, expect)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["pretrain", "moco_v2", "--out", str(afile)]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert afile.read_text() == "x"


def test_float_spelling_and_valid_recipes_pass():
    from vislearn.core.config import DEFAULTS, load_config
    from vislearn.core.schema import validate_config
    from vislearn.tasks.ssl.methods import get_method

    cfg = load_config(ROOT / "configs/fmnist_ssl/moco_v2.yaml", ["model.lr=1e-3"])
    assert cfg["model"]["lr"] == "1e-3"  # YAML 1.1 reads this spelling as a string
    validate_config(cfg, DEFAULTS, get_method(cfg["method"]))
    assert cfg["model"]["lr"] == pytest.approx(1e-3)


def test_rejected_command_exits_2_in_a_real_process(tmp_path):
    out = tmp_path / "run"
    res = _run("-m", "vislearn", "pretrain", "moco_v2", "--epochs", "0", "--out", str(out))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "vislearn: error: trainer.max_epochs must be >= 1, got 0"
    ]
    assert not out.exists()


def test_seg_video_and_dit_check_cheap_things_first(tmp_path, capsys):
    out = tmp_path / "run"
    _rejected(
        capsys,
        ["seg", "pretrain", "--datasets", "synthetic:fine,nosuchset", "--cache-dir", str(out)],
        out,
        "'nosuchset' is neither synthetic:<name> nor a folder",
    )
    _rejected(capsys, ["seg", "pretrain", "--steps", "0"], out, "trainer.max_steps must be >= 1")
    _rejected(capsys, ["seg", "finetune", "--batch-size", "0"], out, "data.batch_size")
    _rejected(capsys, ["dit", "train", "--epochs", "0"], out, "trainer.max_epochs must be >= 1")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded: the missing weights are reported first")
    argv = ["video-seg", str(video), "--weights", str(tmp_path / "nope.pth"), "--block"]
    _rejected(capsys, [*argv, str(tmp_path / "b.safetensors")], out, "ViT weights (--weights)")
    _rejected(
        capsys,
        ["train-uvos", "synthetic", "--weights", str(tmp_path / "nope.pth"), "--epochs", "0"],
        out,
        "trainer.max_epochs must be >= 1",
    )


def test_training_dataset_reads_checkpoints_and_exports(tmp_path):
    import torch

    from vislearn.core.artifacts import write_safetensors
    from vislearn.models.io import training_dataset

    new = tmp_path / "new.ckpt"
    config = {"data": {"dataset": "digits", "data_dir": "/data"}}
    torch.save({"state_dict": {}, "vislearn": {"config": config}}, new)
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, old)
    st = tmp_path / "backbone.safetensors"
    write_safetensors(st, {"w": torch.zeros(1)}, {"train_dataset": "fmnist"})
    st_old = tmp_path / "old.safetensors"
    write_safetensors(st_old, {"w": torch.zeros(1)}, {})
    assert training_dataset(new) == ("digits", "/data")
    assert training_dataset(old) is None
    assert training_dataset(st) == ("fmnist", None)
    assert training_dataset(st_old) is None


def test_eval_defaults_to_the_training_set_and_warns_on_another(tmp_path, capsys):
    import torch

    from vislearn.tasks.ssl.cli_tools import checkpoint_data

    ckpt = tmp_path / "digits.ckpt"
    torch.save({"vislearn": {"config": {"data": {"dataset": "fmnist", "data_dir": None}}}}, ckpt)
    a = argparse.Namespace(checkpoint=ckpt, data=None, data_dir=None)
    checkpoint_data(a, "fmnist-mini")
    assert a.data == "fmnist" and "was trained on" in capsys.readouterr().err
    a = argparse.Namespace(checkpoint=ckpt, data="fmnist-mini", data_dir=None)
    checkpoint_data(a, "fmnist-mini")
    err = capsys.readouterr().err.strip().splitlines()
    assert a.data == "fmnist-mini" and len(err) == 1 and err[0].startswith("vislearn: warning")
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}}, old)
    a = argparse.Namespace(checkpoint=old, data=None, data_dir=None)
    checkpoint_data(a, "fmnist-mini")
    assert a.data == "fmnist-mini" and capsys.readouterr().err == ""


def test_methods_and_help_do_not_import_torch():
    for args in (["methods"], ["pretrain", "--help"], ["seg", "pretrain", "--help"]):
        res = _run("-X", "importtime", "-m", "vislearn", *args)
        assert res.returncode == 0, res.stderr[-500:]
        assert not [line for line in res.stderr.splitlines() if "torch" in line], args
    res = _run("-m", "vislearn", "methods")
    lines = dict(re.findall(r"^  (\w+)\s+(.*)$", res.stdout.split("backbones:")[0], re.M))
    assert lines["bingo"].endswith("bag*.") and lines["simclr"].endswith("global batch.")


def test_every_recipe_named_in_help_exists():
    texts = []

    def walk(parser: argparse.ArgumentParser) -> None:
        texts.append(parser.format_help())
        for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    named = set(re.findall(r"configs/[\w./-]+?\.yaml", "\n".join(texts)))
    assert "configs/fmnist_ssl/moco_v2.yaml" in named
    assert not [p for p in named if not (ROOT / p).is_file()]


def test_messages_random_bytes_and_non_dit(tmp_path):
    from vislearn.accel.sampling import load_transformer
    from vislearn.core.errors import VislearnError
    from vislearn.models.io import load_backbone

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(VislearnError) as err:
        load_backbone(junk)
    assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value)
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(VislearnError, match="UNet2DModel, not a DiT/PixArt transformer"):
        load_transformer(unet)


def test_image_folders_take_size_and_colour_from_their_first_image(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from vislearn.data import get_dataset

    for i in range(2):
        cls = tmp_path / f"c{i}"
        cls.mkdir()
        Image.fromarray(np.full((32, 40), 40 * i, np.uint8), "L").save(cls / "a.png")
    ds = get_dataset(str(tmp_path))
    assert (ds.image_size, ds.channels) == (32, 1) and ds[0][0].shape == (1, 32, 32)
    assert "32 px, 1 channel(s)" in capsys.readouterr().err
    ds = get_dataset(str(tmp_path), image_size=16, channels=3)
    assert ds[0][0].shape == (3, 16, 16)
