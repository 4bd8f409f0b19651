"""Annotation sidecars: where they live, atomic saves, loading, merging and the reader hook."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from napari_deparray_ctc.core.annotations import sidecars as ann
from napari_deparray_ctc.core.annotations.sidecars import (
    SIDECAR_NAME,
    AnnotationFileError,
    AnnotationStore,
    apply_sidecar,
    load_annotations,
    merge_labels,
    save_annotations,
    sidecar_for_cell_paths,
    sidecar_path,
)


@dataclass
class _Cell:
    cell_id: str
    label: str | None


def test_sidecar_path_rules(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    one_file = folder / "cells.tif"
    one_file.write_bytes(b"")
    other = folder / "sub" / "more.tif"
    other.parent.mkdir()
    other.write_bytes(b"")

    assert sidecar_path(folder) == folder / SIDECAR_NAME
    assert sidecar_path(one_file) == folder / "cells.tif.annotations.csv"
    # several files dropped at once: the folder holding them all
    assert sidecar_path([one_file, other]) == folder / SIDECAR_NAME
    # a list with one entry behaves like that entry
    assert sidecar_path([str(folder)]) == folder / SIDECAR_NAME
    # a sidecar given directly is kept as is (a user-chosen file)
    assert sidecar_path(folder / SIDECAR_NAME) == folder / SIDECAR_NAME
    with pytest.raises(ValueError, match="no export path"):
        sidecar_path([])


def test_sidecar_for_cell_paths(tmp_path: Path) -> None:
    (tmp_path / "CTC").mkdir()
    (tmp_path / "WBC").mkdir()
    a, b = tmp_path / "CTC" / "a.tif", tmp_path / "WBC" / "b.tif"
    assert sidecar_for_cell_paths([str(a), str(b), None]) == tmp_path / SIDECAR_NAME
    stack = tmp_path / "stack.tif"
    stack.write_bytes(b"")
    assert sidecar_for_cell_paths([str(stack)] * 3) == tmp_path / "stack.tif.annotations.csv"
    assert sidecar_for_cell_paths([None, ""]) is None


def test_save_load_round_trip_keeps_cleared_labels(tmp_path: Path) -> None:
    path = tmp_path / SIDECAR_NAME
    save_annotations(path, {"cell-1": "CTC", "cell,2": "leukocyte", "cell-3": None})
    assert load_annotations(path) == {"cell-1": "CTC", "cell,2": "WBC", "cell-3": None}
    # rows as pairs and as mappings with extra columns
    save_annotations(path, [("x", "WBC"), {"cell_id": "y", "label": "CTC", "annotated_at": "t"}])
    assert load_annotations(path) == {"x": "WBC", "y": "CTC"}
    assert "annotated_at" in path.read_text().splitlines()[0]


def test_load_missing_is_empty_and_bad_files_name_the_file(tmp_path: Path) -> None:
    assert load_annotations(tmp_path / "absent.csv") == {}
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(AnnotationFileError, match="empty") as info:
        load_annotations(empty)
    assert str(empty) in str(info.value)
    bad = tmp_path / "bad.csv"
    bad.write_text("cell_id,label\ncell-1,giraffe\n")
    with pytest.raises(AnnotationFileError, match="giraffe") as info:
        load_annotations(bad)
    assert str(bad) in str(info.value)


def test_failed_save_leaves_previous_file_intact(tmp_path: Path) -> None:
    path = tmp_path / SIDECAR_NAME
    save_annotations(path, {"a": "CTC"})
    before = path.read_bytes()
    with pytest.raises(AnnotationFileError, match="unknown class"):
        save_annotations(path, {"a": "CTC", "b": "banana"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [SIDECAR_NAME]  # no temp file left


def test_save_is_atomic_when_the_write_crashes(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / SIDECAR_NAME
    save_annotations(path, {"a": "CTC"})
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(AnnotationFileError, match="the disk is full") as info:
        save_annotations(path, {"a": "WBC", "b": "WBC"})
    assert str(path) in str(info.value)
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_merge_sidecar_wins_including_cleared() -> None:
    merged = merge_labels(
        ["a", "b", "c", "d"],
        ["CTC", "WBC", None, "CTC"],
        {"a": "WBC", "c": "CTC", "d": None},
    )
    assert merged == ["WBC", "WBC", "CTC", None]
    assert merge_labels(["a"], None, {}) == [None]
    with pytest.raises(ValueError, match="labels"):
        merge_labels(["a", "b"], ["CTC"], {})


def test_apply_sidecar_updates_cells_in_place(tmp_path: Path) -> None:
    save_annotations(tmp_path / SIDECAR_NAME, {"c1": "CTC", "c2": None})
    cells = [_Cell("c1", "WBC"), _Cell("c2", "CTC"), _Cell("c3", "WBC")]
    assert apply_sidecar(tmp_path, cells) == tmp_path / SIDECAR_NAME
    assert [c.label for c in cells] == ["CTC", None, "WBC"]


def test_apply_sidecar_warns_and_keeps_labels_on_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / SIDECAR_NAME
    bad.write_text("no header that makes sense\n")
    cells = [_Cell("c1", "WBC")]
    with pytest.warns(UserWarning, match=SIDECAR_NAME):
        apply_sidecar(tmp_path, cells)
    assert cells[0].label == "WBC"
    assert bad.read_text() == "no header that makes sense\n"


def test_store_accumulates_across_sessions(tmp_path: Path) -> None:
    path = tmp_path / SIDECAR_NAME
    first = AnnotationStore(path)
    first.update("a", "CTC")
    first.update("b", "WBC")
    second = AnnotationStore(path)  # a new napari session
    assert second.annotations == {"a": "CTC", "b": "WBC"}
    stamp_a = second.times["a"]
    second.update("b", None)
    second.update("c", "ctc")
    assert load_annotations(path) == {"a": "CTC", "b": None, "c": "CTC"}
    assert AnnotationStore(path).times["a"] == stamp_a  # untouched entries keep their time
    assert "c" in second and len(second) == 3


def test_store_moves_an_unreadable_file_aside_instead_of_overwriting(tmp_path: Path) -> None:
    path = tmp_path / SIDECAR_NAME
    path.write_text("garbage without columns\n")
    store = AnnotationStore(path)
    assert store.load_error is not None
    store.update("a", "CTC")
    assert store.moved_aside is not None
    assert store.moved_aside.read_text() == "garbage without columns\n"
    assert load_annotations(path) == {"a": "CTC"}


def test_store_save_into_missing_folder_names_the_file(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path / "gone" / SIDECAR_NAME)
    with pytest.raises(AnnotationFileError, match="folder does not exist"):
        store.update("a", "CTC")
    assert store.annotations == {"a": "CTC"}  # kept in memory for a later save


def test_core_annotations_imports_no_qt_or_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, napari_deparray_ctc.core.annotations.sidecars as a; "
        "bad = [m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'magicgui') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ann.__name__.endswith("core.annotations.sidecars")


def test_atomic_writes_keep_ordinary_permissions(tmp_path: Path) -> None:
    """Files are not made private by the temporary-file step (shared drives)."""
    import stat

    from napari_deparray_ctc.core.atomic import atomic_write

    new = tmp_path / "new.csv"
    with atomic_write(new) as handle:
        handle.write("x\n")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask
    existing = tmp_path / "existing.csv"
    existing.write_text("old\n")
    existing.chmod(0o640)
    with atomic_write(existing) as handle:
        handle.write("new\n")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640


def test_a_sidecar_that_is_a_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO named like the annotation file would block ``open()``: refused in words."""
    import subprocess
    import sys
    import textwrap

    pipe = tmp_path / ann.SIDECAR_NAME
    os.mkfifo(pipe)
    code = textwrap.dedent(
        f"""
        from napari_deparray_ctc.core.annotations import sidecars
        from napari_deparray_ctc.core.errors import AnnotationFileError
        try:
            sidecars.load_annotations({str(pipe)!r})
        except AnnotationFileError as exc:
            print("REFUSED", exc)
        print("TIMES", sidecars._read_times(sidecars.Path({str(pipe)!r})))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "REFUSED" in result.stdout and "pipe" in result.stdout
    assert str(pipe) in result.stdout
    assert "TIMES {}" in result.stdout
