"""Shared drives: two sessions at once, read-only exports, full disks (issue: reliability 2).

* Two processes annotate the same export at once: every annotation survives (per-cell merge
  by the last-writer timestamp, under an advisory lock).
* A read-only export folder: annotations go to a per-user fallback file, the user is told
  once, and reopening the export finds them.
* A full disk while saving an annotation, a model or a CSV: a message in words, the previous
  file intact, no temporary file left behind.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from napari_deparray_ctc.core.annotations import sidecars as ann
from napari_deparray_ctc.core.annotations.sidecars import (
    SIDECAR_NAME,
    AnnotationStore,
    apply_sidecar,
    fallback_sidecar,
    load_annotations,
    load_effective_annotations,
)
from napari_deparray_ctc.core.errors import AnnotationFileError, describe_os_error


@pytest.fixture(autouse=True)
def _fallback_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv(ann.FALLBACK_DIR_ENV, str(tmp_path / "user-data"))


WRITER = textwrap.dedent(
    """
    import sys, time
    from napari_deparray_ctc.core.annotations.sidecars import AnnotationStore
    path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = AnnotationStore(path)
    for i in range(n):
        store.update(f"{prefix}{i:03d}", "CTC" if i % 2 else "WBC")
        time.sleep(0.001)
    print("done", len(store))
    """
)


def test_two_processes_annotating_at_once_lose_nothing(tmp_path: Path) -> None:
    sidecar = tmp_path / SIDECAR_NAME
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(sidecar), prefix, "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for prefix in ("a", "b")
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    saved = load_annotations(sidecar)
    assert len(saved) == 120
    assert saved["a059"] == "CTC" and saved["b000"] == "WBC"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_the_newest_annotation_of_a_cell_wins(tmp_path: Path) -> None:
    sidecar = tmp_path / SIDECAR_NAME
    first, second = AnnotationStore(sidecar), AnnotationStore(sidecar)
    first.update("cell1", "CTC")
    second.update("cell2", "WBC")  # second never saw cell1: it must not drop it
    second.update("cell1", "WBC")  # ...and its later call on cell1 wins
    first.update("cell3", None)  # first still holds cell1 = CTC (older): merged away
    assert load_annotations(sidecar) == {"cell1": "WBC", "cell2": "WBC", "cell3": None}


def _refuse_writes_in(folder: Path, code: int, monkeypatch) -> None:
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folder:
            raise OSError(code, os.strerror(code))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_read_only_export_uses_a_per_user_fallback(tmp_path: Path, monkeypatch) -> None:
    export = tmp_path / "cd-rom"
    export.mkdir()
    sidecar = export / SIDECAR_NAME
    _refuse_writes_in(export, errno.EROFS, monkeypatch)
    store = AnnotationStore(sidecar)
    written = store.update("cell7", "CTC")
    assert written == fallback_sidecar(sidecar) and written.is_file()
    assert not sidecar.exists()
    assert store.notice is not None and "read-only" in store.notice and str(written) in store.notice
    store.notice = None  # the session shows it once, then clears it
    store.update("cell8", "WBC")
    assert store.notice is None  # said once

    class Cell:
        def __init__(self, cell_id):
            self.cell_id, self.label = cell_id, None

    cells = [Cell("cell7"), Cell("cell8"), Cell("cell9")]
    assert apply_sidecar(export, cells) == sidecar  # what the reader does on reopening
    assert [c.label for c in cells] == ["CTC", "WBC", None]
    assert load_effective_annotations(sidecar) == {"cell7": "CTC", "cell8": "WBC"}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_saving_an_annotation(tmp_path: Path, monkeypatch, code: int) -> None:
    sidecar = tmp_path / SIDECAR_NAME
    store = AnnotationStore(sidecar)
    store.update("a", "CTC")
    before = sidecar.read_bytes()

    def full(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(AnnotationFileError) as info:
        store.update("b", "WBC")
    message = str(info.value)
    assert str(sidecar) in message and describe_os_error(OSError(code, "")) in message
    assert "Errno" not in message and "OSError" not in message
    monkeypatch.undo()
    assert sidecar.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        SIDECAR_NAME
    ] and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert "b" in store  # kept in memory: the next save can succeed
    assert store.save() == sidecar and load_annotations(sidecar)["b"] == "WBC"


def test_full_disk_saving_a_csv_and_a_model(tmp_path: Path, monkeypatch) -> None:
    from napari_deparray_ctc.core.annotations.cell_table import CellRow, write_cell_table
    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    csv_path, model_path = tmp_path / "calls.csv", tmp_path / "model.pt"
    write_cell_table(csv_path, [CellRow("a", None, 0.5, 0.5)])
    network = build_network("resnet18")
    save_model(model_path, network, {"arch": "resnet18", "threshold": 0.5, "image_size": 32})
    before = {p: p.read_bytes() for p in (csv_path, model_path)}

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        write_cell_table(csv_path, [CellRow("b", None, 0.7, 0.5)])
    assert describe_os_error(info.value) == "the disk is full"
    with pytest.raises(OSError):
        save_model(model_path, network, {"arch": "resnet18", "threshold": 0.4, "image_size": 32})
    monkeypatch.undo()
    for path, content in before.items():
        assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.csv", "model.pt"]


def test_cli_says_the_disk_is_full_in_words(tmp_path: Path, monkeypatch, capsys) -> None:
    from napari_deparray_ctc.cli import main
    from napari_deparray_ctc.core.synth import write_export

    export = write_export(tmp_path / "export", 4, seed=1, image_size=24)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["synth", str(tmp_path / "new"), "--cells", "2"]) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and "Errno" not in err and "Traceback" not in err
    assert export.is_dir()


@pytest.mark.skipif(os.geteuid() != 0 or not sys.platform.startswith("linux"), reason="needs root")
def test_a_really_full_tmpfs(tmp_path: Path) -> None:
    """A 64 kB tmpfs: saving annotations until it is full keeps the last good file."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        store = AnnotationStore(mount / SIDECAR_NAME)
        last_good = None
        with pytest.raises(AnnotationFileError, match="the disk is full"):
            for i in range(100_000):
                store.update(f"cell-with-a-long-identifier-{i:06d}", "CTC")
                last_good = (mount / SIDECAR_NAME).read_bytes()
        assert (mount / SIDECAR_NAME).read_bytes() == last_good
        assert not [p for p in mount.iterdir() if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
