"""DiT training, sampling and benchmarking commands (``vislearn dit``) built on
:mod:`vislearn.accel` (the caching itself) and the shared engine."""
