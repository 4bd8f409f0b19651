"""File ▸ Open Sample ▸ "Synthetic DEPArray sample (DEPArray CTC)".

The sample is written once (the template, in the cache) and every opening reads a fresh copy
of it in a dated folder the analyst can find (issue 22, point 6).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from napari_deparray_ctc.napari import sample_data as _sample_data
from napari_deparray_ctc.napari.reader import read_deparray
from napari_deparray_ctc.napari.sample_data import (
    DATA_DIR_ENV,
    SAMPLE_CELLS,
    SAMPLE_FOLDER_NAME,
    sample_export_dir,
    synthetic_sample,
    user_data_root,
)

PLUGIN = "napari-deparray-ctc"
SAMPLE_KEY = "synthetic_deparray"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEPARRAY_CTC_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    """The analyst's copies (``~/Documents/DEPArray-CTC`` by default) go to tmp."""
    folder = tmp_path / "documents"
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    return folder


def _folder_of(layers):
    """The export folder a sample's layers were read from."""
    return Path(layers[0][1]["metadata"]["deparray"]["paths"][0]).parent


def test_open_sample_in_napari(make_napari_viewer, cache_dir):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, SAMPLE_KEY)

    assert [layer.name for layer in layers] == [
        f"{SAMPLE_FOLDER_NAME} :: {ch}" for ch in ("BF", "DAPI", "PE", "APC")
    ]
    assert [layer.colormap.name for layer in layers] == ["gray", "blue", "yellow", "magenta"]
    for layer in layers:
        assert layer.data.shape[0] == SAMPLE_CELLS
        assert layer.data.ndim == 3
        meta = layer.metadata["deparray"]
        assert len(meta["cell_ids"]) == SAMPLE_CELLS
        assert set(meta["labels"]) == {"CTC", "WBC"}
    labels = layers[0].metadata["deparray"]["labels"]
    assert 0.2 <= labels.count("CTC") / SAMPLE_CELLS <= 0.3
    # CTCs and WBCs are mixed along the slider, not sorted by class
    assert labels[: labels.count("CTC")] != ["CTC"] * labels.count("CTC")


def test_sample_is_the_readers_layers(cache_dir, data_dir):
    layers = synthetic_sample()
    folder = _folder_of(layers)
    again = read_deparray(str(folder))
    assert [kw["name"] for _, kw, _ in layers] == [kw["name"] for _, kw, _ in again]
    for (data, kwargs, kind), (data2, kwargs2, kind2) in zip(layers, again, strict=True):
        assert kind == kind2 == "image"
        np.testing.assert_array_equal(data, data2)
        assert kwargs["metadata"] == kwargs2["metadata"]
    assert sample_export_dir().is_relative_to(cache_dir)  # the template
    assert folder.name == SAMPLE_FOLDER_NAME and folder.is_relative_to(data_dir)  # the copy
    assert folder.parent.name.startswith("sample ")


def test_sample_opens_fresh_and_keeps_earlier_copies(cache_dir, data_dir):
    """Issue 22, point 6: reopening the sample does not bring back earlier edits (it started
    "annotated 19 of 24"), and the earlier copy keeps them, in a visible folder."""
    from napari_deparray_ctc.core.annotations.sidecars import load_annotations, save_annotations

    first = synthetic_sample()
    folder = _folder_of(first)
    sidecar = Path(first[0][1]["metadata"]["deparray"]["annotations_path"])
    assert sidecar.parent == folder  # annotations go beside the copy, not in the cache
    save_annotations(sidecar, {"cell0000": None})  # the analyst clears a cell
    second = synthetic_sample()
    assert _folder_of(second) != folder
    labels = second[0][1]["metadata"]["deparray"]["labels"]
    assert None not in labels and len(labels) == SAMPLE_CELLS  # as shipped: all labelled
    assert "cell0000" in load_annotations(sidecar)  # the first copy keeps its edit
    assert not any(p.name.startswith("deparray_annotations") for p in sample_export_dir().iterdir())


def test_sample_copies_go_to_documents_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV)
    monkeypatch.delenv("DEPARRAY_CTC_CACHE_DIR")
    monkeypatch.setattr("platformdirs.user_documents_dir", lambda: str(tmp_path / "Documents"))
    assert user_data_root() == tmp_path / "Documents" / "DEPArray-CTC"


def test_sample_says_where_it_is(cache_dir, monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_info", shown.append)
    layers = synthetic_sample()
    assert len(shown) == 1 and str(_folder_of(layers).parent) in shown[0], shown


def test_sample_is_written_once_and_reproducible(cache_dir, monkeypatch, tmp_path):
    first = synthetic_sample()
    folder = sample_export_dir()

    def must_not_write(*args, **kwargs):
        raise AssertionError("the cached sample should be reused")

    monkeypatch.setattr(_sample_data, "_write_sample", must_not_write)
    second = synthetic_sample()
    assert sample_export_dir() == folder
    assert _folder_of(second) != _folder_of(first)  # a fresh copy each time
    for (data, _, _), (data2, _, _) in zip(first, second, strict=True):
        np.testing.assert_array_equal(data, data2)

    # a fresh cache gives the same pixels (seeded generator)
    monkeypatch.undo()
    monkeypatch.setenv("DEPARRAY_CTC_CACHE_DIR", str(tmp_path / "other-cache"))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "documents"))
    third = synthetic_sample()
    assert sample_export_dir() != folder
    for (data, _, _), (data3, _, _) in zip(first, third, strict=True):
        np.testing.assert_array_equal(data, data3)


def test_interrupted_sample_write_leaves_nothing_behind(cache_dir, monkeypatch):
    def fail(folder):
        folder.mkdir(parents=True)
        (folder / "cell0000.tif").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(_sample_data, "_write_sample", fail)
    with pytest.raises(KeyboardInterrupt):
        synthetic_sample()
    assert not cache_dir.exists() or os.listdir(cache_dir) == []
    monkeypatch.undo()
    monkeypatch.setenv("DEPARRAY_CTC_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv(DATA_DIR_ENV, str(cache_dir.parent / "documents"))
    assert len(synthetic_sample()) == 4  # the next try writes a complete sample


def test_unwritable_cache_falls_back_to_a_temporary_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DEPARRAY_CTC_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    layers = synthetic_sample()
    assert layers[0][0].shape[0] == SAMPLE_CELLS
    assert sample_export_dir().is_relative_to(tmp_path / "tmp")


def test_unwritable_documents_fall_back_to_a_temporary_folder(cache_dir, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the documents folder should be")
    monkeypatch.setenv(DATA_DIR_ENV, str(blocker / "documents"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    layers = synthetic_sample()
    assert layers[0][0].shape[0] == SAMPLE_CELLS
    assert _folder_of(layers).is_relative_to(tmp_path / "tmp")
