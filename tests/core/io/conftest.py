"""Fixtures of the core reader tests (the TIFF factories are in ``tests/core/conftest.py``)."""

from __future__ import annotations

import pytest

from napari_deparray_ctc.core import io


@pytest.fixture(autouse=True)
def _close_stack_files():
    """read_cell keeps stack files open between calls; close them after every test."""
    yield
    io.release_open_files()
