"""ClassifyInputs: defaults, validation, core kwargs, and the remembered model (no Qt)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_deparray_ctc.napari.widgets.classify.inputs import (
    CONFIG_DIR_ENV,
    ClassifyInputs,
    config_dir,
    last_model_path,
    remember_model_path,
)


@pytest.fixture
def settings_dir(tmp_path, monkeypatch):
    folder = tmp_path / "config"
    monkeypatch.setenv(CONFIG_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not checked here")
    return path


def test_defaults_choose_no_cells():
    inputs = ClassifyInputs()
    assert inputs.layer_names is None  # the widget chooses one export (never "all BF layers")
    assert inputs.batch_size >= 1
    assert inputs.device is None


def test_missing_model_is_the_first_error(tmp_path):
    assert "Choose a model file" in ClassifyInputs().validation_error()
    missing = tmp_path / "nowhere.pt"
    error = ClassifyInputs(model_path=str(missing)).validation_error()
    assert str(missing) in error and "does not exist" in error
    error = ClassifyInputs(model_path=str(tmp_path)).validation_error()
    assert str(tmp_path) in error and "not a file" in error


def test_valid_inputs_have_no_error(model_file):
    inputs = ClassifyInputs(model_path=str(model_file), layer_names=("a :: BF",))
    assert inputs.validation_error() is None
    assert inputs.validation_error(available_layers=["a :: BF", "a :: DAPI"]) is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"batch_size": 0}, "at least 1"),
        ({"batch_size": 2.5}, "whole number"),
        ({"batch_size": True}, "whole number"),
        ({"layer_names": ()}, "Choose the cells to classify"),
    ],
)
def test_invalid_inputs_explain_why(model_file, changes, expected):
    inputs = ClassifyInputs(model_path=str(model_file), **changes)
    error = inputs.validation_error()
    assert error is not None and expected in error


def test_chosen_layer_must_exist(model_file):
    inputs = ClassifyInputs(model_path=str(model_file), layer_names=("gone",))
    assert "'gone'" in inputs.validation_error(available_layers=["other"])


def test_remembered_model_survives_a_new_session(settings_dir, model_file):
    assert last_model_path() == ""
    assert remember_model_path(model_file) is True
    assert config_dir() == settings_dir
    stored = json.loads((settings_dir / "classify_widget.json").read_text())
    assert stored["last_model_path"] == str(model_file)
    # a fresh interpreter (a new napari session) reads it back
    code = (
        "from napari_deparray_ctc.napari.widgets.classify.inputs import last_model_path;"
        "print(last_model_path())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == str(model_file)


def test_corrupt_settings_file_is_ignored(settings_dir):
    settings_dir.mkdir(parents=True)
    (settings_dir / "classify_widget.json").write_text("{not json")
    assert last_model_path() == ""
    (settings_dir / "classify_widget.json").write_text('["a list"]')
    assert last_model_path() == ""


def test_unwritable_settings_do_not_raise(tmp_path, monkeypatch, model_file):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv(CONFIG_DIR_ENV, str(blocker / "sub"))
    assert remember_model_path(model_file) is False
    assert last_model_path() == ""


def test_inputs_module_imports_no_qt_or_torch():
    code = (
        "import sys; import napari_deparray_ctc.napari.widgets.classify.inputs, "
        "napari_deparray_ctc.napari.results;"
        "bad = [m for m in ('torch', 'qtpy', 'PyQt5', 'napari') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


class _Layer:
    def __init__(self, name, shape, channel=None):
        self.name, self.data, self.rgb = name, np.zeros(shape), False
        self.metadata = {"deparray": {"channel": channel}} if channel else {}


def test_targets_offer_each_export_newest_first_then_plain_layers():
    from napari_deparray_ctc.napari.widgets.classify.inputs import classify_targets

    layers = [
        _Layer("old :: BF", (5, 8, 8), "BF"),
        _Layer("old :: DAPI", (5, 8, 8), "DAPI"),
        _Layer("a.png", (8, 8)),
        _Layer("new :: BF", (3, 8, 8), "BF"),
        _Layer("b.png", (8, 8)),
    ]
    targets = classify_targets(layers)
    assert [t.layer_names for t in targets] == [("new :: BF",), ("old :: BF",), ("a.png", "b.png")]
    assert targets[0].label.startswith("new  (3 cells")
    assert "plain image layers (2" in targets[2].label
