"""TrainInputs (the training widget's settings) and the model-file rules, without Qt."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from napari_deparray_ctc.napari.widgets.train.inputs import (
    AUGMENT_FAMILIES,
    TrainInputs,
    config_defaults,
    decide_model_destination,
    default_ui_threads,
    in_progress_path,
    stored_val_f1,
)


def _valid(tmp_path: Path, **changes) -> TrainInputs:
    values = {
        "bf_layer": "cells :: BF",
        "dapi_layer": "cells :: DAPI",
        "out": str(tmp_path / "m.pt"),
    }
    values.update(changes)
    return TrainInputs(**values)


def test_defaults_come_from_train_config() -> None:
    from napari_deparray_ctc.core.train import TrainConfig

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
    assert config_defaults()["epochs"] == config.epochs
    assert inputs.num_threads == default_ui_threads() >= 1


def test_augment_families_match_the_core() -> None:
    from napari_deparray_ctc.core.augment import FAMILIES

    assert AUGMENT_FAMILIES == tuple(FAMILIES)


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
        ({"num_threads": 0}, "Threads"),
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
    with pytest.raises(TypeError, match="no field"):
        inputs.to_config(colour="red")


def test_in_progress_path() -> None:
    assert in_progress_path("/a/model.pt") == Path("/a/model.in-progress.pt")
    assert in_progress_path("/a/model") == Path("/a/model.in-progress.pt")


def _save_model(path: Path, f1: float | None) -> None:
    from napari_deparray_ctc.core.model import build_network, save_model

    metrics = {} if f1 is None else {"f1": f1}
    save_model(
        path,
        build_network("resnet18"),
        {"arch": "resnet18", "threshold": 0.5, "image_size": 32, "metrics": metrics},
    )


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for name, f1 in (("good", 0.9), ("no_f1", None)):
        _save_model(folder / f"{name}.pt", f1)
        out[name] = (folder / f"{name}.pt").read_bytes()
    return out


def test_stored_val_f1(tmp_path: Path, model_files: dict[str, bytes]) -> None:
    (tmp_path / "g.pt").write_bytes(model_files["good"])
    (tmp_path / "n.pt").write_bytes(model_files["no_f1"])
    assert stored_val_f1(tmp_path / "g.pt") == pytest.approx(0.9)
    assert stored_val_f1(tmp_path / "n.pt") is None


def test_destination_new_file(tmp_path: Path) -> None:
    decision = decide_model_destination(tmp_path / "m.pt", 0.5)
    assert (
        decision.path == tmp_path / "m.pt" and not decision.replaces and not decision.kept_previous
    )


def test_destination_never_replaces_a_better_model(tmp_path: Path, model_files) -> None:
    out = tmp_path / "m.pt"
    out.write_bytes(model_files["good"])
    worse = decide_model_destination(out, 0.7)
    assert worse.kept_previous and not worse.replaces
    assert worse.path.parent == tmp_path and worse.path != out and worse.path.suffix == ".pt"
    assert "worse" in worse.message and worse.path.name in worse.message
    better = decide_model_destination(out, 0.95)
    assert better.path == out and better.replaces
    forced = decide_model_destination(out, 0.1, overwrite_if_worse=True)
    assert forced.path == out and forced.replaces
    assert out.read_bytes() == model_files["good"]  # deciding never touches the file


def test_destination_keeps_an_unreadable_file(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    out.write_bytes(b"not a model")
    decision = decide_model_destination(out, 0.99)
    assert decision.kept_previous and decision.path != out
    assert "not a readable model" in decision.message and str(out) in decision.message


def test_inputs_is_a_dataclass_with_every_setting() -> None:
    names = {f.name for f in dataclasses.fields(TrainInputs)}
    assert {"arch", "epochs", "augment", "dapi_strategy", "val_fraction", "seed", "out"} <= names


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        ((0.9, None), (0.8, None), True),
        ((0.7, None), (0.8, None), False),
        ((0.8, 0.2), (0.8, 0.3), True),  # tie on F1: lower loss wins
        ((0.8, 0.4), (0.8, 0.3), False),
        ((0.8, None), (0.8, 0.3), True),  # tie, loss unknown: not worse
        ((None, None), (0.8, 0.3), False),
        ((0.1, None), (None, None), True),  # old file without F1
    ],
)
def test_is_not_worse(new, old, expected) -> None:
    from napari_deparray_ctc.napari.widgets.train.inputs import is_not_worse

    assert is_not_worse(new[0], old[0], new[1], old[1]) is expected
