"""TrainInputs (the training widget's settings), without Qt; the model-file rules are core's
(``tests/core/test_model_files.py``)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from napari_deparray_ctc.core.constants import background_threads
from napari_deparray_ctc.core.training.train import config_field_defaults
from napari_deparray_ctc.napari.widgets.train.inputs import SETTINGS, TrainInputs, field_spec


def _valid(tmp_path: Path, **changes) -> TrainInputs:
    values = {
        "bf_layer": "cells :: BF",
        "dapi_layer": "cells :: DAPI",
        "out": str(tmp_path / "m.pt"),
    }
    values.update(changes)
    return TrainInputs(**values)


def test_defaults_come_from_train_config() -> None:
    from napari_deparray_ctc.core.training.train import TrainConfig

    config = TrainConfig()
    inputs = TrainInputs()
    for name in (
        "arch",
        "epochs",
        "image_size",
        "batch_size",
        "dapi_strategy",
        "val_fraction",
        "seed",
    ):
        assert getattr(inputs, name) == getattr(config, name), name
    assert inputs.augment == tuple(config.augment)
    assert config_field_defaults()["epochs"] == config.epochs
    assert inputs.num_threads == background_threads() >= 1


def test_every_setting_has_its_default_and_range_from_train_config() -> None:
    for name in SETTINGS:
        spec = field_spec(name)
        assert spec.default == config_field_defaults()[name]
        if name in ("epochs", "image_size", "val_fraction"):
            assert spec.minimum is not None and spec.maximum is not None, name
        if name in ("arch", "dapi_strategy", "augment"):
            assert spec.choices, name


def test_module_does_not_import_qt() -> None:
    import napari_deparray_ctc.napari.widgets.train.inputs as module

    assert module.__name__ in sys.modules
    source = Path(module.__file__).read_text()
    assert "qtpy" not in source and "napari." not in source.replace("napari_deparray_ctc.", "")


def test_valid_inputs_have_no_error(tmp_path: Path) -> None:
    assert _valid(tmp_path).validation_error() is None
    # DAPI optional with strategy "none"
    assert _valid(tmp_path, dapi_layer=None, dapi_strategy="none").validation_error() is None


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"bf_layer": None}, "BF layer"),
        ({"arch": "vgg16"}, "vgg16"),
        ({"epochs": 0}, "Epochs"),
        ({"image_size": 8}, "Image size"),
        ({"augment": ("geometric", "sparkle")}, "sparkle"),
        ({"dapi_strategy": "magic"}, "magic"),
        ({"dapi_layer": None, "dapi_strategy": "substitute"}, "needs a DAPI layer"),
        ({"val_fraction": 0.9}, "Validation fraction"),
        ({"val_fraction": float("nan")}, "Validation fraction"),
        ({"seed": -1}, "Seed"),
        ({"out": ""}, "output model file"),
    ],
)
def test_validation_errors(tmp_path: Path, changes: dict, fragment: str) -> None:
    error = _valid(tmp_path, **changes).validation_error()
    assert error is not None and fragment in error


def test_output_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "m.pt"
    error = _valid(tmp_path, out=str(missing)).validation_error()
    assert error is not None and str(missing) in error and "does not exist" in error
    error = _valid(tmp_path, out=str(tmp_path)).validation_error()
    assert error is not None and "is a folder" in error


def test_to_config_writes_to_the_in_progress_file(tmp_path: Path) -> None:
    inputs = _valid(tmp_path, epochs=3, augment=("noise",), dapi_strategy="blend", seed=7)
    config = inputs.to_config()
    assert config.out == str(tmp_path / "m.in-progress.pt")
    assert (config.epochs, config.augment, config.dapi_strategy, config.seed) == (
        3,
        ("noise",),
        "blend",
        7,
    )
    assert config.num_threads == inputs.num_threads
    config.validated()  # the core accepts it
    assert inputs.to_config(out=tmp_path / "x.pt", patience=2).patience == 2
    with pytest.raises(TypeError):
        inputs.to_config(colour="red")
    init = tmp_path / "lab.pt"
    init.write_bytes(b"x")
    assert _valid(tmp_path, init_from=str(init)).to_config().pretrained == str(init)
    assert (
        "does not exist" in _valid(tmp_path, init_from=str(tmp_path / "no.pt")).validation_error()
    )


def test_inputs_is_a_dataclass_with_every_setting() -> None:
    names = {f.name for f in dataclasses.fields(TrainInputs)}
    assert {"arch", "epochs", "augment", "dapi_strategy", "val_fraction", "seed", "out"} <= names
