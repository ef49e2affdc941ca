"""User-facing errors.

Anything a user can cause (missing files, bad configs, mismatched checkpoints, empty
datasets) raises :class:`VislearnError`; the CLI prints it as a single line
``vislearn: error: ...`` and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class VislearnError(Exception):
    """An error caused by user input, reported without a traceback by the CLI."""
