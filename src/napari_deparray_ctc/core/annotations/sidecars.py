"""Annotation sidecar files: the user's CTC / WBC calls, saved beside an export.

Where the file lives, its format, the merge rules (sidecar over labels.csv; several sessions
merged per cell by the newest timestamp) and the read-only fallback: docs/annotations.md.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import errno
import hashlib
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from napari_deparray_ctc.core.annotations.labels import (
    canonical_label,
    read_labels_csv,
    write_labels_csv,
)
from napari_deparray_ctc.core.errors import AnnotationFileError, LabelsFileError, describe_os_error

__all__ = [
    "SIDECAR_NAME",
    "SIDECAR_SUFFIX",
    "AnnotationFileError",
    "AnnotationStore",
    "apply_sidecar",
    "fallback_sidecar",
    "load_annotations",
    "load_effective_annotations",
    "merge_labels",
    "save_annotations",
    "sidecar_for_cell_paths",
    "sidecar_path",
]

#: sidecar file name inside an export folder
SIDECAR_NAME = "deparray_annotations.csv"
#: suffix appended to a single export file's name
SIDECAR_SUFFIX = ".annotations.csv"

#: a row to save: ``(cell_id, label)`` or a mapping with ``cell_id``, ``label`` (+ extra columns)
AnnotationRow = tuple[str, str | None] | Mapping[str, Any]


def sidecar_path(export_path: str | os.PathLike | Sequence[str | os.PathLike]) -> Path:
    """Where the annotation sidecar of an export lives.

    Parameters
    ----------
    export_path
        What was opened: a folder, a single file, or a list of files (several files
        dropped at once).

    Returns
    -------
    pathlib.Path
        ``<folder>/deparray_annotations.csv`` for a folder (or for a list of files: their
        common folder), ``<file>.annotations.csv`` for a single file. The file may not
        exist yet.

    Raises
    ------
    ValueError
        When ``export_path`` is an empty list.
    """
    if isinstance(export_path, str | os.PathLike):
        paths = [Path(export_path)]
    else:
        paths = [Path(p) for p in export_path]
    if not paths:
        raise ValueError("no export path given")
    if len(paths) == 1:
        path = paths[0]
        if path.is_dir():
            return path / SIDECAR_NAME
        if path.name == SIDECAR_NAME or path.name.endswith(SIDECAR_SUFFIX):
            return path  # already a sidecar
        return path.with_name(path.name + SIDECAR_SUFFIX)
    folders = {p if p.is_dir() else p.parent for p in paths}
    common = Path(os.path.commonpath([os.fspath(f.absolute()) for f in folders]))
    return common / SIDECAR_NAME


def sidecar_for_cell_paths(cell_paths: Iterable[str | os.PathLike | None]) -> Path | None:
    """The sidecar for a set of cells when the opened path is unknown (e.g. sample data).

    Parameters
    ----------
    cell_paths
        Each cell's file (``None`` entries are ignored).

    Returns
    -------
    pathlib.Path or None
        For cells that all come from one file, ``<file>.annotations.csv``; otherwise
        ``<common folder>/deparray_annotations.csv``; ``None`` when no path is known.
    """
    unique = sorted({os.fspath(p) for p in cell_paths if p not in (None, "")})
    if not unique:
        return None
    if len(unique) == 1:
        only = Path(unique[0])
        return only / SIDECAR_NAME if only.is_dir() else only.with_name(only.name + SIDECAR_SUFFIX)
    common = Path(os.path.commonpath([os.path.abspath(p) for p in unique]))
    if common.is_file():  # pragma: no cover - only if identical files differ in spelling
        common = common.parent
    return common / SIDECAR_NAME


def load_annotations(path: str | os.PathLike) -> dict[str, str | None]:
    """Read an annotation sidecar.

    Parameters
    ----------
    path
        The sidecar file.

    Returns
    -------
    dict
        ``cell_id -> "CTC" | "WBC" | None`` in file order (``None``: the user cleared the
        label). An empty dict when the file does not exist.

    Raises
    ------
    AnnotationFileError
        When the file exists but cannot be read or parsed; the message names the file and
        the reason.
    """
    path = Path(path)
    if not path.exists():
        return {}
    blocking = _not_a_regular_file(path)
    if blocking:  # a pipe or a device would block the read, or never end
        raise AnnotationFileError(path, blocking)
    try:
        if path.stat().st_size == 0:
            raise AnnotationFileError(path, "annotation file is empty (0 bytes)")
        records = read_labels_csv(path)
    except AnnotationFileError:
        raise
    except LabelsFileError as exc:
        raise AnnotationFileError(exc.path, exc.reason) from None
    except OSError as exc:
        raise AnnotationFileError(path, f"cannot be read: {describe_os_error(exc)}") from exc
    return {cell_id: record.label for cell_id, record in records.items()}


def _row_dict(row: AnnotationRow) -> dict[str, Any]:
    if isinstance(row, Mapping):
        return dict(row)
    cell_id, label = row
    return {"cell_id": cell_id, "label": label}


def save_annotations(
    path: str | os.PathLike,
    rows: Mapping[str, str | None] | Iterable[AnnotationRow],
) -> None:
    """Write an annotation sidecar atomically (temporary file, then rename).

    Parameters
    ----------
    path
        Destination; its folder must exist. The previous file stays intact until the new
        one is complete.
    rows
        A ``{cell_id: label}`` mapping, ``(cell_id, label)`` pairs, or mappings with
        ``cell_id`` and ``label`` keys (extra keys become extra columns, e.g.
        ``annotated_at``). ``label`` is ``"CTC"``, ``"WBC"`` (or an alias) or ``None``.

    Raises
    ------
    AnnotationFileError
        When a row is invalid or the file cannot be written; nothing is changed then.
    """
    if isinstance(rows, Mapping):
        prepared = [{"cell_id": k, "label": v} for k, v in rows.items()]
    else:
        prepared = [_row_dict(row) for row in rows]
    try:
        write_labels_csv(path, prepared)
    except LabelsFileError as exc:
        raise AnnotationFileError(exc.path, exc.reason) from None
    except OSError as exc:
        raise AnnotationFileError(
            path, f"could not be saved: {describe_os_error(exc)}; the previous file was kept"
        ) from exc


def merge_labels(
    cell_ids: Sequence[str],
    labels: Sequence[str | None] | None,
    annotations: Mapping[str, str | None],
) -> list[str | None]:
    """Labels of ``cell_ids`` after applying the user's annotations (the sidecar wins).

    Parameters
    ----------
    cell_ids
        The cells.
    labels
        Their labels from class folders or ``labels.csv`` (aligned), or ``None``.
    annotations
        What :func:`load_annotations` returned.

    Returns
    -------
    list
        Aligned with ``cell_ids``: the annotation where the cell is listed in the sidecar
        (``None`` when the user cleared it), otherwise the original label.
    """
    base = list(labels) if labels is not None else [None] * len(cell_ids)
    if len(base) != len(cell_ids):
        raise ValueError(f"{len(cell_ids)} cell ids but {len(base)} labels")
    return [
        annotations[cid] if cid in annotations else label
        for cid, label in zip(cell_ids, base, strict=True)
    ]


def apply_sidecar(
    export_path: str | os.PathLike | Sequence[str | os.PathLike],
    cells: Iterable[Any],
) -> Path:
    """Apply an export's annotation sidecar to its cells, in place (called by the reader).

    Never raises for a bad sidecar: an unreadable one is reported with a
    :class:`UserWarning` naming the file and the reason, and the cells keep their labels
    (the file itself is left untouched for the user to inspect).

    Parameters
    ----------
    export_path
        What was opened (a folder, a file, or a list of files), as given to the reader.
    cells
        Objects with ``cell_id`` and a writable ``label`` attribute
        (:class:`~napari_deparray_ctc.core.io.Cell` or ``CellSource``).

    Returns
    -------
    pathlib.Path
        The sidecar path for this export (it may not exist). Store it in the layers'
        metadata as ``"annotations_path"`` so that annotations made in napari are saved
        to the same file.
    """
    path = sidecar_path(export_path)
    try:
        annotations = load_effective_annotations(path)
    except AnnotationFileError as exc:
        warnings.warn(f"annotations not applied: {exc}", UserWarning, stacklevel=2)
        return path
    if annotations:
        for cell in cells:
            if cell.cell_id in annotations:
                cell.label = annotations[cell.cell_id]
    return path


def _not_a_regular_file(path: Path) -> str | None:
    from napari_deparray_ctc.core.io.ifd_chain import not_regular_reason

    return not_regular_reason(path)


def _read_times(path: Path) -> dict[str, str]:
    """The ``annotated_at`` column of a sidecar (empty when absent or unreadable)."""
    from napari_deparray_ctc.core.annotations.csv_safe import unescape_cell

    if _not_a_regular_file(path):
        return {}
    with contextlib.suppress(OSError, csv.Error, UnicodeDecodeError):
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames and "annotated_at" in reader.fieldnames:
                return {
                    unescape_cell(row.get("cell_id") or "").strip(): row.get("annotated_at") or ""
                    for row in reader
                }
    return {}


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="microseconds")


#: environment variable overriding the per-user folder of fallback annotation files
FALLBACK_DIR_ENV = "DEPARRAY_CTC_DATA_DIR"


def fallback_sidecar(path: str | os.PathLike) -> Path:
    """The per-user file that stands in for a sidecar whose folder cannot be written.

    ``<user data folder>/annotations/<hash of the sidecar's full path>/<sidecar name>``, so
    every export has its own, found again from the export's path alone.
    """
    root = os.environ.get(FALLBACK_DIR_ENV)
    if root:
        base = Path(root)
    else:
        from platformdirs import user_data_dir

        base = Path(user_data_dir("napari-deparray-ctc", appauthor=False))
    key = hashlib.sha256(os.fspath(Path(path).absolute()).encode("utf-8", "surrogateescape"))
    return base / "annotations" / key.hexdigest()[:16] / Path(path).name


def _entries(path: Path) -> dict[str, tuple[str | None, str]]:
    """``cell_id -> (label, annotated_at)`` of a sidecar (empty when it does not exist)."""
    labels = load_annotations(path)
    times = _read_times(path) if labels else {}
    return {cell_id: (label, times.get(cell_id, "")) for cell_id, label in labels.items()}


def _merge(*tables: dict[str, tuple[str | None, str]]) -> dict[str, tuple[str | None, str]]:
    """Per cell, the entry with the newest timestamp (later tables win a tie)."""
    merged: dict[str, tuple[str | None, str]] = {}
    for table in tables:
        for cell_id, entry in table.items():
            if cell_id not in merged or entry[1] >= merged[cell_id][1]:
                merged[cell_id] = entry
    return merged


def load_effective_annotations(path: str | os.PathLike) -> dict[str, str | None]:
    """A sidecar merged with its per-user fallback (newest entry per cell wins).

    Raises
    ------
    AnnotationFileError
        When the sidecar exists but cannot be read.
    """
    path = Path(path)
    entries = _entries(path)
    fallback = fallback_sidecar(path)
    if fallback.exists():
        with contextlib.suppress(AnnotationFileError):
            entries = _merge(entries, _entries(fallback))
    return {cell_id: label for cell_id, (label, _time) in entries.items()}


@contextlib.contextmanager
def _locked(path: Path):
    """An advisory lock on the sidecar's folder while a save reads, merges and writes.

    The folder itself is locked (``flock`` on its descriptor), so no lock file is left
    beside the export. Where locking is not available (Windows, some network file systems)
    the save goes on without it: the per-cell merge still keeps both sessions' annotations;
    only two saves at the very same instant could then miss each other's latest one, until
    the next save.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


class AnnotationStore:
    """The user's annotations of one export, autosaved to its sidecar after every change.

    Loads the existing sidecar (and its per-user fallback) first, so entries from earlier
    sessions are kept and only updated. Every save merges with what is on disk by the
    last-writer timestamp per cell (see the module docstring). If the existing file cannot be
    read it is moved aside (renamed to ``<name>.unreadable-<timestamp>``) before the first
    save, never overwritten, and :attr:`moved_aside` tells where it went. When the export
    folder is read-only, saves go to :func:`fallback_sidecar` and :attr:`notice` says so once.

    Parameters
    ----------
    path
        The sidecar file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.annotations: dict[str, str | None] = {}
        self.times: dict[str, str] = {}
        self.load_error: AnnotationFileError | None = None
        self.moved_aside: Path | None = None
        self.using_fallback = False
        self.notice: str | None = None
        try:
            entries = _entries(self.path)
        except AnnotationFileError as exc:
            self.load_error = exc
            entries = {}
        fallback = fallback_sidecar(self.path)
        if fallback.exists():
            with contextlib.suppress(AnnotationFileError):
                entries = _merge(entries, _entries(fallback))
        self.annotations = {cid: label for cid, (label, _t) in entries.items()}
        self.times = {cid: time for cid, (_label, time) in entries.items()}

    @property
    def target(self) -> Path:
        """Where the next save goes (the sidecar, or its per-user fallback)."""
        return fallback_sidecar(self.path) if self.using_fallback else self.path

    def set(self, cell_id: str, label: str | None) -> None:
        """Record ``label`` for ``cell_id`` (``None`` = cleared) without saving."""
        self.annotations[str(cell_id)] = canonical_label(label)
        self.times[str(cell_id)] = _now()

    def update(self, cell_id: str, label: str | None) -> Path:
        """Record one annotation and save at once (the autosave)."""
        self.set(cell_id, label)
        return self.save()

    def _move_unreadable_aside(self) -> None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.unreadable-{stamp}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            raise AnnotationFileError(
                self.path,
                f"the existing file is unreadable ({self.load_error.reason}) and could not be "
                f"moved aside ({describe_os_error(exc)}); it was not overwritten",
            ) from None
        self.moved_aside = aside

    def _write(self, target: Path) -> None:
        with _locked(target):
            with contextlib.suppress(AnnotationFileError):
                on_disk = _entries(target)
                ours = {
                    cid: (label, self.times.get(cid, "")) for cid, label in self.annotations.items()
                }
                merged = _merge(on_disk, ours)
                self.annotations = {cid: label for cid, (label, _t) in merged.items()}
                self.times = {cid: time for cid, (_label, time) in merged.items()}
            rows = [
                {"cell_id": cid, "label": label, "annotated_at": self.times.get(cid, "")}
                for cid, label in self.annotations.items()
            ]
            save_annotations(target, rows)

    def save(self) -> Path:
        """Merge with the file on disk and write every annotation, atomically.

        Returns
        -------
        pathlib.Path
            The file written (the sidecar, or its per-user fallback).

        Raises
        ------
        AnnotationFileError
            When the file cannot be written (the in-memory annotations are kept, so a later
            save can succeed; the previous file is left whole).
        """
        if self.load_error is not None and self.path.exists() and self.moved_aside is None:
            self._move_unreadable_aside()
        if not self.path.parent.is_dir():
            raise AnnotationFileError(self.path, "the folder does not exist")
        if not self.using_fallback:
            try:
                self._write(self.path)
                return self.path
            except AnnotationFileError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, OSError) and cause.errno in _READ_ONLY):
                    raise
            self.using_fallback = True
            self.notice = (
                f"The folder {self.path.parent} cannot be written (read-only); annotations are "
                f"saved to {self.target} instead, and are found there again when you reopen "
                "this export."
            )
        target = self.target
        target.parent.mkdir(parents=True, exist_ok=True)
        self._write(target)
        return target

    def __len__(self) -> int:
        return len(self.annotations)

    def __contains__(self, cell_id: object) -> bool:
        return cell_id in self.annotations
