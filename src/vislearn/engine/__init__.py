"""Engine: base module, momentum encoders, queues, optimisers, trainer factory."""

from vislearn.engine.momentum import cosine_momentum, ema_update, momentum_copy
from vislearn.engine.queue import LabelledMemoryQueue, MemoryQueue
from vislearn.engine.ssl import SSLMethod
from vislearn.engine.trainer import AtomicCheckpoint, Throughput, build_trainer
from vislearn.engine.video import VideoSSLMethod
from vislearn.ops.optim import LARS, build_optimizer, param_groups, warmup_cosine

__all__ = [
    "LARS",
    "AtomicCheckpoint",
    "LabelledMemoryQueue",
    "MemoryQueue",
    "SSLMethod",
    "Throughput",
    "VideoSSLMethod",
    "build_optimizer",
    "build_trainer",
    "cosine_momentum",
    "ema_update",
    "momentum_copy",
    "param_groups",
    "warmup_cosine",
]
