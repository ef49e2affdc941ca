"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tests with one intra-op thread.

    The tiny models of the tests gain nothing from two threads, and when other jobs share the
    two cores of the test machine OpenMP's spinning threads make them 10-40x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
