"""Built-in settings of ``vislearn dit ...`` (the first layer of
:func:`vislearn.core.config.load_config`), one dict per sub-command. Imports nothing heavy."""

from __future__ import annotations

from typing import Any

__all__ = ["DIT_CLASSIFIER_DEFAULTS", "DIT_SAMPLE_DEFAULTS", "DIT_TRAIN_DEFAULTS"]

#: ``dit sample`` and ``dit bench``
DIT_SAMPLE_DEFAULTS: dict[str, Any] = {
    "model": None,  # diffusers model or pipeline folder
    "cache": {  # vislearn.accel.cache.DuCaCache: a preset and its overridden fields
        "policy": "duca",
        "interval": None,
        "warmup": None,
        "score": None,
        "fresh_ratio": None,
    },
    "sampler": {"steps": 50, "cfg": 4.0, "scheduler": "ddim", "n": 16, "classes": None},
    "repeats": 3,  # bench: interleaved timing repeats
    "seed": 0,
    "device": "cpu",
    "out": None,  # sample: the PNG grid
    "json": None,  # bench: also write the row here
}

#: ``dit train``
DIT_TRAIN_DEFAULTS: dict[str, Any] = {
    "data": {"dataset": "fmnist-mini", "data_dir": None, "batch_size": 128, "image_size": 32},
    "dit": {"patch_size": 2, "depth": 6, "heads": 4, "head_dim": 32, "lr": 3e-4},
    "trainer": {
        "max_epochs": 10,
        "max_steps": -1,
        "accelerator": "auto",
        "devices": "auto",
        "precision": "32-true",
    },
    "seed": 0,
    "out": None,  # run folder; the model goes to OUT/model
}

#: ``dit classifier``
DIT_CLASSIFIER_DEFAULTS: dict[str, Any] = {
    "data": {"dataset": "fmnist-mini", "data_dir": None, "image_size": 32, "channels": 1},
    "trainer": {"max_epochs": 3},
    "seed": 0,
    "out": None,  # the .safetensors file
}
