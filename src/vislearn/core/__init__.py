"""Core: errors, file utilities, distributed helpers, the config system and artefact files.
Nothing here imports torch at module level except :mod:`vislearn.core.distributed`."""
