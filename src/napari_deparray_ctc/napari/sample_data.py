"""File ▸ Open Sample ▸ "Synthetic DEPArray sample" (npe2 ``sample_data`` contribution).

Writes a small synthetic DEPArray-like export with
:func:`napari_deparray_ctc.core.synth.write_export` (seeded, so always the same cells) and
opens it through the reader, so the sample gives exactly the layers a real export gives.

Two folders:

* **the template**, written once and reused, never opened itself: ``$DEPARRAY_CTC_CACHE_DIR``
  when that variable is set, otherwise the user cache folder
  (``platformdirs.user_cache_dir("napari-deparray-ctc")``); when neither can be written, a new
  temporary folder;
* **a fresh copy per opening**, which is what napari opens, so the sample always starts as
  shipped (its cells labelled from ``labels.csv``, no earlier edits), and everything the
  analyst makes from it (annotations, models, CSV files, all written beside the export) lands
  in a folder they can find: ``~/Documents/DEPArray-CTC/sample <date time>/`` (the
  platform's Documents folder; ``$DEPARRAY_CTC_DATA_DIR`` overrides it; when only
  ``$DEPARRAY_CTC_CACHE_DIR`` is set, as in tests, ``<that>/documents``; when none can be
  written, a temporary folder). A notification names the folder.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
import time
from pathlib import Path

from .layer_data import LayerData
from .reader import read_deparray

__all__ = [
    "DATA_DIR_ENV",
    "SAMPLE_CELLS",
    "SAMPLE_CTC_FRACTION",
    "SAMPLE_SEED",
    "fresh_sample_copy",
    "sample_export_dir",
    "synthetic_sample",
    "user_data_root",
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

#: overrides the folder of the analyst's copies of the sample (default: Documents/DEPArray-CTC)
DATA_DIR_ENV = "DEPARRAY_CTC_DATA_DIR"
#: the folder under the user's Documents folder
DATA_FOLDER_NAME = "DEPArray-CTC"


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


def user_data_root() -> Path:
    """Where the analyst's copies of the sample go (see the module docstring)."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("DEPARRAY_CTC_CACHE_DIR")
    if cache:  # tests and scripts that redirect the cache keep their copies beside it
        return Path(cache) / "documents"
    from platformdirs import user_documents_dir

    return Path(user_documents_dir()) / DATA_FOLDER_NAME


def fresh_sample_copy() -> Path:
    """A new copy of the sample export, in a dated folder under :func:`user_data_root`.

    Returns
    -------
    pathlib.Path
        The copied export folder (named ``synthetic-deparray-sample``, the layers' stem),
        inside ``<root>/sample <YYYY-MM-DD HH-MM-SS>/``.
    """
    template = sample_export_dir()
    stamp = time.strftime("%Y-%m-%d %H-%M-%S")
    try:
        root = user_data_root()
        root.mkdir(parents=True, exist_ok=True)
        parent = root / f"sample {stamp}"
        n = 2
        while parent.exists():  # two openings within a second
            parent = root / f"sample {stamp} ({n})"
            n += 1
        parent.mkdir()
    except OSError:
        parent = Path(tempfile.mkdtemp(prefix="deparray-sample-copy-"))
    target = parent / SAMPLE_FOLDER_NAME
    shutil.copytree(template, target, ignore=_not_the_export)
    return target


def _not_the_export(folder: str, names: list[str]) -> list[str]:
    """What an earlier version left in the template (annotations, models, CSV files)."""
    keep = {"labels.csv", "channels.csv", "channels.txt"}
    return [
        name
        for name in names
        if not os.path.isdir(os.path.join(folder, name))
        and name not in keep
        and not name.lower().endswith((".tif", ".tiff"))
    ]


def synthetic_sample() -> list[LayerData]:
    """Layers of the synthetic DEPArray sample: a fresh copy of it, opened by the reader.

    Every call opens a new copy (:func:`fresh_sample_copy`), so the sample never remembers
    earlier edits, and says where the copy is.

    Returns
    -------
    list of LayerData
        One ``(N, Y, X)`` stack per channel (BF, DAPI, PE, APC) of
        :data:`SAMPLE_CELLS` cells; the cells carry their class in
        ``metadata["deparray"]["labels"]``.
    """
    folder = fresh_sample_copy()
    layers = read_deparray(str(folder))
    _say_where(folder)
    return layers


def _say_where(folder: Path) -> None:
    try:
        from napari.utils.notifications import show_info
    except ImportError:  # pragma: no cover - napari is there whenever napari calls this
        return
    show_info(
        f"Sample opened fresh: {folder.parent.name}\n"
        f"in {folder.parent}\n"
        "Its annotations, the models you train on it and the CSV files you export are saved "
        "in that folder (File ▸ Open Folder… reopens it with your edits)."
    )
