"""Shared helpers of the reliability suite (issue 6): hang guard, tiny model, tiny exports, CLI.

* Every test here runs under a wall-clock guard (``signal.alarm``; pytest-timeout is not a
  dependency): a test that hangs fails with :class:`HangError` instead of blocking CI. The
  default limit is :data:`DEFAULT_TIMEOUT_S`; ``@pytest.mark.time_limit(seconds)`` changes it
  (``0``: no guard, for tests that set their own alarm).
* ``tiny_model`` is an *untrained* one-channel ResNet-18 saved with
  :func:`napari_deparray_ctc.core.model.loaded.save_model` (32 px input): enough to exercise every
  code path that loads and runs a model, in well under a second per call.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability_helpers import CliRun

#: seconds a reliability test may run before it is failed as hung
DEFAULT_TIMEOUT_S = 300


class HangError(Exception):
    """A test ran past its time limit (see :func:`_hang_guard`)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "time_limit(seconds): fail a reliability test that runs longer (hang guard)"
    )


@pytest.fixture(autouse=True)
def _hang_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail (not block) a test that hangs: SIGALRM after the test's time limit."""
    marker = request.node.get_closest_marker("time_limit")
    limit = int(marker.args[0]) if marker else DEFAULT_TIMEOUT_S
    if limit <= 0 or not hasattr(signal, "SIGALRM"):  # 0: the test guards itself
        yield
        return

    def on_alarm(signum, frame):
        raise HangError(f"{request.node.nodeid} ran for more than {limit} s (hang?)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------
# a tiny model file


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained one-channel ResNet-18 (32 px input, threshold 0.5), saved as a model file."""
    import torch

    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-model") / "tiny.pt"
    save_model(
        path, build_network("resnet18"), {"arch": "resnet18", "threshold": 0.5, "image_size": 32}
    )
    return path


# --------------------------------------------------------------------------------------------
# the command line


@pytest.fixture
def run_cli() -> Callable[..., CliRun]:
    """``run_cli(*argv) -> CliRun``: :func:`napari_deparray_ctc.cli.main` in-process.

    stdout and stderr are captured in :class:`io.StringIO` objects, which (like a real
    terminal's stderr with its ``backslashreplace`` error handler) accept any path, including
    file names that are not valid UTF-8.
    """
    from napari_deparray_ctc.cli import main

    def run(*argv: str | os.PathLike) -> CliRun:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([os.fspath(a) for a in argv])
            except SystemExit as exc:  # pragma: no cover - main() returns its status
                code = int(exc.code or 0)
        assert "Traceback" not in err.getvalue(), err.getvalue()
        return CliRun(code, out.getvalue(), err.getvalue())

    return run
