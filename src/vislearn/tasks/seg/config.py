"""Built-in settings of ``vislearn seg`` (the first layer of
``vislearn.core.config.load_config(..., defaults=SEG_DEFAULTS)``). Imports nothing heavy."""

from __future__ import annotations

from typing import Any

from vislearn.core.config import LIGHTNING_TRAINER

__all__ = ["SEG_DEFAULTS"]

SEG_DEFAULTS: dict[str, Any] = {
    "method": "mdp",
    "model": {},
    "data": {
        # pretraining: data set specs (synthetic:<name> or VOC-layout folders) and the
        # labelled fraction kept of each ({spec or name: fraction}; default 1)
        "datasets": ["synthetic:fine", "synthetic:coarse", "synthetic:partial"],
        "fractions": {},
        # fine-tuning / evaluation: the target and the labelled fraction of its train split
        "target": "synthetic:fine",
        "fraction": 1.0,
        "fraction_seed": 0,
        # fine-tuning: share of the labelled images held out for model selection (0: none;
        # > 0: validate every trainer.val_every_n_epochs, test the best validated weights)
        "val_fraction": 0.0,
        # where the validation images come from: "labelled" (carved from the labelled
        # subset) or "rest" (the train split outside it, as many as val_fraction of the
        # labelled count: never trained on, nor seen by a pretraining restricted to the subset)
        "val_from": "labelled",
        "image_size": 64,
        # synthetic sets (vislearn.data.synthetic.segmentation_scenes)
        "num_train": 2000,
        "num_test": 500,
        "synthetic_seed": 0,
        "sprite_source": "fmnist-mini",
        "data_dir": None,
        "background_dir": None,
        "cache_dir": None,
        # folders: the split list used for testing
        "folder_test_split": "val",
        "batch_size": 32,
        "num_workers": 0,
        "steps_per_epoch": None,
    },
    "trainer": {
        "max_steps": 1000,
        "val_every_n_epochs": 0,  # 0: validate once, after training
        **LIGHTNING_TRAINER,
        "progress": True,
    },
    "eval": {"batch_size": 64, "num_predictions": 16},
    "init": None,
    "transfer": "backbone+decoder",
    "seed": 0,
    "out": None,
}
