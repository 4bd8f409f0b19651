"""Plain helpers of the reliability suite (imported by its conftest and tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

#: the napari reader's plugin name
PLUGIN = "napari-deparray-ctc"
#: channel names of the good cells written by :func:`write_good_cells`
GOOD_CHANNELS = ("BF", "DAPI")
#: side of the good cells (pixels)
GOOD_SIDE = 16


# --------------------------------------------------------------------------------------------
# tiny data


def good_planes(index: int, side: int = GOOD_SIDE) -> list[np.ndarray]:
    """Distinct, seeded BF and DAPI planes of good cell ``index`` (uint16)."""
    rng = np.random.default_rng(1000 + index)
    bf = rng.integers(200, 3000, (side, side)).astype("uint16")
    dapi = rng.integers(0, 500, (side, side)).astype("uint16")
    return [bf, dapi]


def write_multipage(path: Path, planes: Sequence[np.ndarray], names: Sequence[str]) -> Path:
    """One TIFF per cell, one page per channel, the channel name in the PageName tag."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        for plane, name in zip(planes, names, strict=True):
            tif.write(plane, photometric="minisblack", extratags=[(285, "s", 0, name, True)])
    return path


def write_good_cells(folder: Path, n: int = 2, start: int = 0) -> list[Path]:
    """``n`` good multipage cells ``cell0000.tif``... (BF + DAPI) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_multipage(folder / f"cell{i:04d}.tif", good_planes(i), GOOD_CHANNELS)
        for i in range(start, start + n)
    ]


# --------------------------------------------------------------------------------------------
# the command line


@dataclass
class CliRun:
    """What one in-process ``deparray-ctc`` call did."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("deparray-ctc: error:")]

    @property
    def warning_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("deparray-ctc: warning:")]


def python_env() -> dict[str, str]:
    """Environment for child Python processes: unbuffered, headless, one torch thread."""
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        QT_QPA_PLATFORM=env.get("QT_QPA_PLATFORM", "offscreen"),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


def run_python(
    code: str, *args: str | os.PathLike, timeout: float = 240, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``code`` with ``args`` in a fresh interpreter (killed after ``timeout`` s)."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(os.fspath, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=python_env(),
        **kwargs,
    )


# --------------------------------------------------------------------------------------------
# the documentation tables quote the messages: keep the quotes true


def first_quote(doc: str) -> str | None:
    """The first `` `...` `` quote of a documentation cell (``None`` if there is none)."""
    match = re.search(r"`([^`]+)`", doc)
    return match.group(1) if match else None


def quote_matches(quote: str, message: str) -> bool:
    """Whether ``message`` contains ``quote``, where ``...`` in the quote stands for any text."""
    parts = [re.escape(part) for part in quote.split("...")]
    return re.search(".*?".join(parts), message, flags=re.DOTALL) is not None
