"""Shared test configuration.

* Qt runs headless by default (``QT_QPA_PLATFORM=offscreen``) so ``python -m pytest`` works on
  a machine without a display; set the variable yourself to override it. napari's canvas still
  needs OpenGL: pytest-xvfb starts Xvfb for the session when it is installed.
* triton (if installed) is imported before any OpenGL context: see :func:`_preload_triton`.
* Without a display and without Xvfb (system packages missing: run ``make test``, which installs
  them), the tests that need napari's canvas are skipped with ONE reason that names the fix,
  instead of failing by the hundred.
* The sample-data cache goes to a per-session temporary folder, never the user's cache.
* Tests marked ``realdata`` are skipped when ``../shared/real-cells`` (next to the repository)
  is absent; the ``real_cells_dir`` fixture gives its path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _preload_triton() -> None:
    """Import triton (shipped with CUDA builds of torch) before any OpenGL context exists.

    napari's canvas under Xvfb renders with Mesa's llvmpipe, which loads Mesa's LLVM into the
    process; importing triton *after* that (``torchvision.models`` -> ``torch._dynamo`` ->
    ``triton``) crashes the interpreter with a segmentation fault (two LLVMs in one process).
    Importing it first is safe. Without triton (CPU builds of torch) this does nothing.
    """
    try:
        import triton  # noqa: F401
    except Exception:
        pass


_preload_triton()

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_CELLS_DIR = REPO_ROOT.parent / "shared" / "real-cells"


#: fixtures that need napari's Qt/OpenGL canvas
GUI_FIXTURES = {"make_napari_viewer", "qtbot", "make_napari_viewer_proxy"}
NO_CANVAS_REASON = (
    "napari's canvas needs a display: Xvfb, Mesa and Qt's xcb libraries are not installed "
    "(run `make test`, which installs them, or `sudo bash .ci/system-deps.sh .venv`)"
)


def _canvas_possible() -> bool:
    import shutil
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("DISPLAY"):
        return True
    return shutil.which("Xvfb") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``realdata`` tests without ../shared/real-cells, and GUI tests without a display."""
    skip_real = pytest.mark.skip(reason=f"real-cell images not found at {REAL_CELLS_DIR}")
    skip_gui = pytest.mark.skip(reason=NO_CANVAS_REASON)
    have_real, have_canvas = REAL_CELLS_DIR.is_dir(), _canvas_possible()
    for item in items:
        if not have_real and "realdata" in item.keywords:
            item.add_marker(skip_real)
        if not have_canvas and GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(skip_gui)


@pytest.fixture(scope="session")
def real_cells_dir() -> Path:
    """Folder with the real bright-field + DNA-stain images (``../shared/real-cells``)."""
    if not REAL_CELLS_DIR.is_dir():
        pytest.skip(f"real-cell images not found at {REAL_CELLS_DIR}")
    return REAL_CELLS_DIR


@pytest.fixture(autouse=True, scope="session")
def _sample_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Keep the sample-data cache out of the user's home folder during tests."""
    cache = tmp_path_factory.mktemp("deparray-cache")
    old = os.environ.get("DEPARRAY_CTC_CACHE_DIR")
    os.environ["DEPARRAY_CTC_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("DEPARRAY_CTC_CACHE_DIR", None)
    else:
        os.environ["DEPARRAY_CTC_CACHE_DIR"] = old
