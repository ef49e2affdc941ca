"""The ``vislearn`` command line: listing, one tiny pretraining run shared by the tests
(module fixture), evaluation and export of its checkpoint, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from vislearn.cli import main
from vislearn.core.errors import VislearnError
from vislearn.models import create_backbone, load_weights
from vislearn.models.io import load_backbone

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("single_thread")

TINY = [
    "model.backbone_kwargs={stem: small_ds, width: 8}",
    "model.proj_hidden_dim=32",
    "model.queue_size=64",
    "data.batch_size=32",
    "data.knn_bank_size=200",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.progress=false",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, single_thread) -> Path:
    """One tiny ``vislearn pretrain moco_v2`` run, in-process."""
    out = tmp_path_factory.mktemp("cli") / "moco"
    assert main(["pretrain", "moco_v2", *TINY, "--out", str(out)]) == 0
    return out


def _error_line(capsys) -> str:
    """The captured stderr must be exactly one ``vislearn: error:`` line, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("vislearn: error: ")
    return lines[0]


def test_methods_lists_methods_and_backbones(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("moco_v2", "simclr", "byol", "resnet_tiny", "vit_mini"):
        assert name in out
    # the methods with their own commands are listed too
    for name in ("--augment mra", "--method mdp", "train-uvos", "duca_dit"):
        assert name in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["pretrain", "no_such_method"], "no_such_method"),
        (["pretrain", "moco_v2", "--data", "{tmp}/no_such_dir"], "no_such_dir"),
        (["pretrain", "moco_v2", "--config", "{tmp}/missing.yaml"], "config file not found"),
        (["pretrain", "moco_v2", "data.nope=1"], "data.nope"),
        (["pretrain", "moco_v2", "nosection.key=1"], "nosection"),
        (["pretrain", "bingo"], "needs a pretrained teacher"),
        (["pretrain", "bingo", "--teacher", "{tmp}/missing.ckpt"], "not found"),
        (["pretrain", "sage"], "evaluator"),
        (["pretrain", "sage", "--evaluator", "{tmp}/missing.ckpt"], "missing.ckpt"),
        (["eval", "knn", "--checkpoint", "{tmp}/missing.ckpt"], "not found"),
        (["export", "--checkpoint", "{tmp}/missing.ckpt", "--out", "{tmp}/x.st"], "not found"),
    ],
)
def test_bad_input_gives_one_line_error(args, expected, tmp_path, capsys):
    args = [a.format(tmp=tmp_path) for a in args]
    assert main([*args, "--out", str(tmp_path / "out")] if "pretrain" in args else args) == 2
    assert expected in _error_line(capsys)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_unknown_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "moco_v2", "--no-such-flag"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_error_exit_code_from_a_real_process(tmp_path):
    """The console entry point: exit status 2 and one line on stderr, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "vislearn", "eval", "knn", "--checkpoint", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith("vislearn: error: weights file not found")


def test_pretrain_writes_its_artifacts(run_dir):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["method"] == "moco_v2"
    assert cfg["model"]["backbone_kwargs"] == {"stem": "small_ds", "width": 8}
    assert cfg["model"]["queue_size"] == 64 and cfg["data"]["batch_size"] == 32
    # the resolved config: what the data chose and the method's own defaults are filled in
    assert cfg["data"]["image_size"] == 28 and cfg["data"]["channels"] == 1
    assert cfg["model"]["in_chans"] == 1 and cfg["model"]["backbone"] == "resnet_tiny"
    assert "temperature" in cfg["model"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/loss" in header and "val/knn_top1" in header
    assert any((run_dir / "tensorboard").iterdir())
    state = load_file(str(run_dir / "backbone.safetensors"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    for k, v in state.items():
        assert torch.equal(v, ckpt["state_dict"][f"backbone.{k}"]), k


def _eval_json(capsys, checkpoint: Path, *extra: str) -> dict:
    assert main(["eval", "knn", "--checkpoint", str(checkpoint), "--k", "20", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_knn_from_ckpt_and_safetensors(run_dir, capsys, tmp_path):
    from_ckpt = _eval_json(
        capsys, run_dir / "checkpoints" / "last.ckpt", "--json", str(tmp_path / "r.json")
    )
    assert 0.0 <= from_ckpt["knn_top1"] <= 100.0
    assert from_ckpt["knn_top1"] > 20.0  # far above chance (10 %) even for a random ResNet
    assert json.loads((tmp_path / "r.json").read_text()) == from_ckpt
    from_st = _eval_json(capsys, run_dir / "backbone.safetensors")
    assert from_st["knn_top1"] == from_ckpt["knn_top1"]  # the same weights


def test_export_writes_loadable_safetensors(run_dir, tmp_path, capsys):
    out = tmp_path / "exported.safetensors"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(run_dir / "checkpoints" / "last.ckpt"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    model = create_backbone("resnet_tiny", in_chans=1, stem="small_ds", width=8)
    load_weights(model, out)
    reference = load_file(str(run_dir / "backbone.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, reference[k]), k
    rebuilt = load_backbone(out)  # the metadata names the architecture
    assert rebuilt.num_features == model.num_features


def test_eval_with_wrong_architecture(run_dir, capsys):
    args = ["eval", "knn", "--checkpoint", str(run_dir / "backbone.safetensors")]
    assert main([*args, "--backbone", "resnet18"]) == 2
    assert "shape mismatch" in _error_line(capsys)


def test_corrupt_image_in_folder_is_skipped(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    args = ["pretrain", "simclr", "--data", str(folder), "--out", str(tmp_path / "run")]
    overrides = [o for o in TINY if "queue_size" not in o and "batch_size" not in o]
    overrides += ["data.batch_size=16", "data.image_size=28", "data.channels=1"]
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\).*broken\.png"):
        assert main([*args, *overrides]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_eval_linear_probe_end_to_end(run_dir, capsys):
    """pretrain -> frozen features -> linear probe on the embedded 5k/1k split."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert main(["eval", "linear", "--checkpoint", str(ckpt), "--epochs", "3"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(res) == {"checkpoint", "dataset", "linear_top1"}
    assert 40.0 < res["linear_top1"] <= 100.0  # chance is 10 %


# ---- one config loader for every command (parse level) ----------------------------------------


def _parse(*argv: str):
    from vislearn.cli import build_parser

    parser = build_parser()
    args, extra = parser.parse_known_args(list(argv))
    if isinstance(getattr(args, "overrides", None), list):
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
    return args


def _recipe(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_pretrain_and_classifier_configs(tmp_path):
    from vislearn.tasks.ssl.cli import classifier_config, pretrain_config

    recipe = _recipe(tmp_path, {"method": "simclr", "model": {"lr": 0.5, "temperature": 0.3},
                                "trainer": {"max_epochs": 9, "devices": 1}})  # fmt: skip
    a = _parse(
        "pretrain",
        "moco_v2",
        "--config",
        recipe,
        "--lr",
        "0.1",
        "--epochs",
        "4",
        "--devices",
        "2",
        "model.temperature=0.2",
        "--out",
        "o",
        "trainer.max_epochs=5",
    )
    cfg = pretrain_config(a)
    assert cfg["method"] == "moco_v2" and cfg["out"] == "o"
    assert cfg["model"] == {"lr": 0.1, "temperature": 0.2}
    assert cfg["trainer"]["max_epochs"] == 5 and cfg["trainer"]["devices"] == 2
    a = _parse("train-classifier", "--config", recipe, "--augment", "mra", "--mask-ratio", "0.25",
               "--no-paste-back", "--label-fraction", "0.1", "model.mra.prob=0.5",
               "--occlusion-size", "7")  # fmt: skip
    cfg = classifier_config(a)
    assert cfg["method"] == "supervised" and cfg["model"]["batch_augment"] == "mra"
    assert cfg["model"]["mra"] == {"mask_ratio": 0.25, "paste_back": False, "prob": 0.5}
    assert cfg["data"]["label_fraction"] == 0.1 and cfg["data"]["labelled_batch_size"] == 256
    assert cfg["eval"]["occlusion_size"] == 7 and cfg["eval"]["occlusion_seed"] == 0
    assert cfg["out"] == "runs/classifier_mra" and "backbone" not in cfg["model"]
    cfg = classifier_config(_parse("train-classifier"))  # no recipe: the CPU ResNet-tiny
    assert cfg["model"]["backbone"] == "resnet_tiny" and cfg["eval"]["occlusion_size"] == 14


def test_seg_config_takes_recipe_flags_and_both_override_forms(tmp_path):
    from vislearn.tasks.seg.cli import seg_config

    recipe = _recipe(tmp_path, {"defaults": [str(ROOT / "configs/seg_mdp/pretrain_mdp.yaml")],
                                "model": {"lr": 0.5}})  # fmt: skip
    a = _parse(
        "seg",
        "pretrain",
        "--config",
        recipe,
        "--steps",
        "3",
        "model.lr=0.01",
        "--set",
        "data.num_train=7",
        "--datasets",
        "synthetic:fine,synthetic:coarse",
    )
    cfg = seg_config(a)
    assert cfg["method"] == "mdp" and cfg["model"]["lr"] == 0.01
    assert cfg["model"]["temperature"] == 0.1  # from the inherited recipe
    assert cfg["trainer"]["max_steps"] == 3 and cfg["data"]["num_train"] == 7
    assert cfg["data"]["datasets"] == ["synthetic:fine", "synthetic:coarse"]


def test_vos_configs(tmp_path):
    from vislearn.tasks.vos.cli import train_uvos_config, video_seg_config

    recipe = _recipe(tmp_path, {"data": {"gap": 2, "resolution": [64, 64]},
                                "trainer": {"max_epochs": 6}, "block": {"lr": 5e-4}})  # fmt: skip
    a = _parse("train-uvos", "synthetic", "--weights", "w.pth", "--out", "o", "--config", recipe,
               "--epochs", "3", "--no-augment", "--devices", "2", "block.num_heads=4",
               "--set", "data.num_frames=2")  # fmt: skip
    cfg = train_uvos_config(a)
    assert cfg["videos"] == "synthetic" and cfg["vit"] == {
        "arch": "dino_vits8", "weights": "w.pth", "patch_size": None, "img_size": None,
        "nested": None}  # fmt: skip
    assert cfg["data"]["gap"] == 2 and cfg["data"]["resolution"] == [64, 64]
    assert cfg["data"]["augment"] is False and cfg["data"]["num_frames"] == 2
    assert cfg["trainer"]["max_epochs"] == 3 and cfg["trainer"]["devices"] == 2
    assert cfg["block"] == {**cfg["block"], "lr": 5e-4, "num_heads": 4}
    assert cfg["trainer"]["progress"] is True and cfg["data"]["batch_size"] == 8
    recipe = _recipe(tmp_path, {"segment": {"tau": 0.5, "key_stride": 4}})
    a = _parse("video-seg", "clip", "--weights", "w", "--block", "b", "--out", "o",
               "--config", recipe, "--key-stride", "2", "segment.objects=all")  # fmt: skip
    cfg = video_seg_config(a)
    g = cfg["segment"]
    assert g["tau"] == 0.5 and g["key_stride"] == 2 and g["objects"] == "all"
    assert g["window"] == 3 and g["overlay"] is False and cfg["block"] == "b"
    with pytest.raises(VislearnError, match="segment.nope"):
        video_seg_config(_parse("video-seg", "c", "--weights", "w", "--block", "b", "--out", "o",
                                "segment.nope=1"))  # fmt: skip


def test_dit_configs(tmp_path):
    from vislearn.tasks.dit.cli import dit_config

    recipe = _recipe(tmp_path, {"dit": {"depth": 2}, "trainer": {"max_epochs": 1}})
    cfg = dit_config(_parse("dit", "train", "--out", "o", "--config", recipe, "--heads", "2",
                            "dit.head_dim=8"))  # fmt: skip
    assert cfg["dit"] == {"patch_size": 2, "depth": 2, "heads": 2, "head_dim": 8, "lr": 3e-4}
    assert cfg["trainer"]["max_epochs"] == 1 and cfg["data"]["batch_size"] == 128
    cfg = dit_config(_parse("dit", "bench", "--model", "m", "--interval", "2",
                            "--set", "sampler.steps=4", "cache.policy=fora"))  # fmt: skip
    assert cfg["cache"]["policy"] == "fora" and cfg["cache"]["interval"] == 2
    assert cfg["sampler"]["steps"] == 4 and cfg["sampler"]["cfg"] == 4.0 and cfg["repeats"] == 3
    cfg = dit_config(_parse("dit", "classifier", "--out", "c.safetensors", "--epochs", "2"))
    assert cfg["trainer"]["max_epochs"] == 2 and cfg["data"]["channels"] == 1


@pytest.mark.parametrize(
    "argv",
    [["methods"], ["pretrain", "moco_v2"], ["train-classifier"], ["seg", "pretrain"],
     ["train-uvos", "v", "--weights", "w", "--out", "o"], ["dit", "train", "--out", "o"],
     ["video-seg", "v", "--weights", "w", "--block", "b", "--out", "o"]],
)  # fmt: skip
def test_every_command_parses_with_config(argv):
    args = _parse(*argv, "--config", "r.yaml") if argv != ["methods"] else _parse(*argv)
    assert argv == ["methods"] or args.config == "r.yaml"


def test_help_and_methods_import_no_torch():
    code = (
        "import sys, contextlib, io\n"
        "from vislearn.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['methods'])\n"
        "    for cmd in (['pretrain'], ['seg', 'pretrain'], ['train-uvos'], ['dit', 'train']):\n"
        "        try:\n"
        "            main([*cmd, '--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "heavy = [m for m in ('torch', 'lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
