"""File ▸ Open Sample ▸ "Synthetic DEPArray sample" (npe2 ``sample_data`` contribution).

Writes a small synthetic DEPArray-like export with
:func:`napari_deparray_ctc.core.synth.write_export` (seeded, so always the same cells) and
opens it through the reader, so the sample gives exactly the layers a real export gives.

The export is written once into a cache folder and reused. The folder is
``$DEPARRAY_CTC_CACHE_DIR`` when that variable is set, otherwise the user cache folder
(``platformdirs.user_cache_dir("napari-deparray-ctc")``); when neither can be written, a new
temporary folder is used.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
from pathlib import Path

from .layer_data import LayerData
from .reader import read_deparray

__all__ = [
    "SAMPLE_CELLS",
    "SAMPLE_CTC_FRACTION",
    "SAMPLE_SEED",
    "sample_export_dir",
    "synthetic_sample",
]

#: number of cells in the sample export
SAMPLE_CELLS = 24
#: fraction of CTCs among them
SAMPLE_CTC_FRACTION = 0.25
#: random seed of the sample export
SAMPLE_SEED = 0
#: layout of the sample export: one multipage TIFF per cell plus ``labels.csv`` (so the cells
#: carry their class, in cell-id order with CTCs and WBCs mixed)
SAMPLE_LAYOUT = "multipage"

#: name of the export folder, and so the stem of the sample's layer names
SAMPLE_FOLDER_NAME = "synthetic-deparray-sample"

_COMPLETE_MARKER = ".complete"


def _cache_root() -> Path:
    override = os.environ.get("DEPARRAY_CTC_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-deparray-ctc", appauthor=False))


def _sample_key() -> str:
    """Identifies the sample: parameters, package version and the generator's source."""
    from .. import __version__
    from ..core import synth

    try:
        source = inspect.getsource(synth)
    except (OSError, TypeError):
        source = ""
    digest = hashlib.sha256(
        f"{__version__}|{SAMPLE_CELLS}|{SAMPLE_CTC_FRACTION}|{SAMPLE_SEED}|{SAMPLE_LAYOUT}|"
        f"{source}".encode()
    ).hexdigest()[:12]
    return f"synthetic-sample-{digest}"


def _write_sample(folder: Path) -> None:
    from ..core.synth import write_export

    write_export(
        folder,
        n_cells=SAMPLE_CELLS,
        ctc_fraction=SAMPLE_CTC_FRACTION,
        seed=SAMPLE_SEED,
        layout=SAMPLE_LAYOUT,
    )


def sample_export_dir() -> Path:
    """Folder holding the synthetic sample export, written on first use.

    The export is written into a temporary sibling folder and renamed into place when
    complete, so an interrupted run never leaves a half-written sample behind.

    Returns
    -------
    pathlib.Path
        The export folder (its name, ``synthetic-deparray-sample``, is the layers' stem).
    """
    key = _sample_key()
    try:
        root = _cache_root()
        target = root / key
        if (target / _COMPLETE_MARKER).is_file():
            return target / SAMPLE_FOLDER_NAME
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    except OSError:
        target = staging = Path(tempfile.mkdtemp(prefix="deparray-sample-"))
    try:
        _write_sample(staging / SAMPLE_FOLDER_NAME)
        (staging / _COMPLETE_MARKER).write_text("ok\n", encoding="utf-8")
        if staging != target:
            if target.exists() and not (target / _COMPLETE_MARKER).is_file():
                shutil.rmtree(target, ignore_errors=True)  # an unfinished older sample
            try:
                os.replace(staging, target)
            except OSError:  # another process finished first
                if not (target / _COMPLETE_MARKER).is_file():
                    raise
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target / SAMPLE_FOLDER_NAME


def synthetic_sample() -> list[LayerData]:
    """Layers of the synthetic DEPArray sample (the reader's layers for that export).

    Returns
    -------
    list of LayerData
        One ``(N, Y, X)`` stack per channel (BF, DAPI, PE, APC) of
        :data:`SAMPLE_CELLS` cells; the cells carry their class in
        ``metadata["deparray"]["labels"]``.
    """
    return read_deparray(str(sample_export_dir()))
