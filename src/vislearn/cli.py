"""The ``vislearn`` command line.

vislearn methods                                  list methods and backbones
vislearn pretrain METHOD [--config F] [k=v ...]   self-supervised pretraining (mae, moco_v2, ...)
vislearn train-classifier --augment mra --mae F   classifier + MRA/CutMix/..., occluded test
vislearn mra-grid --mae F --out grid.png          original / mask / reconstruction / MRA images
vislearn eval knn|linear --checkpoint CKPT        offline evaluation of a frozen backbone
vislearn eval semi --ckpt CKPT --fraction 0.01    fine-tune on a seeded 1 % of the labels
vislearn eval fewshot --ckpt CKPT --ways 5        N-way K-shot episodes on frozen features
vislearn eval video-linear|video-finetune|retrieval|background-probe --ckpt CKPT
                                                  video backbones (motion classes, clips)
vislearn export --checkpoint CKPT --out F         backbone weights -> safetensors
vislearn embed --checkpoint CKPT --out F.png      t-SNE plot of features
vislearn demo                                     the end-to-end demo on embedded data
vislearn seg pretrain|finetune|eval|predict ...   multi-dataset segmentation (MDP)
vislearn train-uvos / video-seg ...               SSL-UVOS video object segmentation
vislearn dit train|sample|bench|classifier ...    DiT sampling with feature caching (DuCa)

Every training command resolves its settings with vislearn.core.config.load_config: built-in
defaults <- --config FILE <- its flags <- section.key=value overrides.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vislearn.core.errors import VislearnError

_SSL, _TOOLS = "vislearn.tasks.ssl.cli", "vislearn.tasks.ssl.cli_tools"
#: command -> (module, its function that adds the command's parser, its function that runs it);
#: the modules import nothing heavy, so building the parser (and --help) stays fast
TASKS: dict[str, tuple[str, str, str]] = {
    "methods": (_TOOLS, "add_methods_parser", "cmd_methods"),
    "pretrain": (_SSL, "add_pretrain_parser", "cmd_pretrain"),
    "train-classifier": (_SSL, "add_train_classifier_parser", "cmd_train_classifier"),
    "mra-grid": (_TOOLS, "add_mra_grid_parser", "cmd_mra_grid"),
    "eval": (_TOOLS, "add_eval_parser", "cmd_eval"),
    "export": (_TOOLS, "add_export_parser", "cmd_export"),
    "embed": (_TOOLS, "add_embed_parser", "cmd_embed"),
    "demo": (_TOOLS, "add_demo_parser", "cmd_demo"),
    "dit": ("vislearn.tasks.dit.cli", "add_dit_parser", "run_dit"),
    "seg": ("vislearn.tasks.seg.cli", "add_seg_parser", "run_seg"),
    "train-uvos": ("vislearn.tasks.vos.cli", "add_train_uvos_parser", "run_train_uvos"),
    "video-seg": ("vislearn.tasks.vos.cli", "add_video_seg_parser", "run_video_seg"),
}


def _task(command: str, which: int):
    module, *functions = TASKS[command]
    return getattr(importlib.import_module(module), functions[which])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vislearn",
        description="Self-/semi-supervised visual representation learning on one engine.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `vislearn COMMAND --help` for the options of a command.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in TASKS:
        _task(command, 0)(sub)
    return p


def _quiet_lightning() -> None:
    """Hide Lightning/torch notices that are noise for a vislearn user."""
    import logging

    from vislearn.core.utils import LIGHTNING_NOTICES, ignore_warnings

    ignore_warnings(
        (
            *LIGHTNING_NOTICES,
            ".*all_gather is deprecated.*",
            ".*across ranks is zero.*",
            r".*module\(s\) in eval mode.*",  # a frozen MAE (MRA) or teacher is meant to be
        )
    )

    class _NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in record.getMessage()

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_NoTips())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if isinstance(getattr(args, "overrides", None), list):  # overrides anywhere
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _quiet_lightning()
    try:
        _task(args.command, 1)(args)
    except VislearnError as exc:
        print(f"vislearn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vislearn: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
