"""Every message a user sees is words: no exception class name, traceback or Python repr.

The messages of the whole bad-input table (reader: alone and in a folder), of every bad
model file, of every unusable training set, and of the command line's error lines are
collected and checked against the marks of internal detail.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from test_bad_inputs import CASES, _build_alone, _build_in_folder
from test_model_files import MODEL_CASES
from test_training_data import TRAINING_CASES

from napari_deparray_ctc.core import io
from napari_deparray_ctc.core.errors import DeparrayError

#: what betrays an internal detail in a message meant for a person
INTERNAL = re.compile(
    r"\b[A-Z]\w*(Error|Exception|Warning)\b(?!s? \w)"  # an exception class name (IndexError...)
    r"|Error:|Exception|Traceback|File \"|line \d+, in "  # a traceback fragment
    r"|<[\w.]+ object at 0x|<class '|\[Errno \d+\]"  # a Python repr, an errno
    r"|\bNone\b|\bdtype\('"  # a printed None, a numpy repr
)


def assert_words(message: str) -> None:
    """Fail when ``message`` shows internal details."""
    found = INTERNAL.search(message)
    assert found is None, f"internal detail {found.group(0)!r} in: {message}"


@pytest.mark.parametrize("message", [
    "cell.tif: corrupt or truncated TIFF (IndexError: pop from empty list)",
    "Traceback (most recent call last):",
    "model.pt: <torch.nn.Linear object at 0x7f00>",
    "x.csv: cannot write ([Errno 28] No space left on device)",
])  # fmt: skip
def test_the_check_catches_internal_details(message: str) -> None:
    with pytest.raises(AssertionError):
        assert_words(message)


def _messages_of_reading(target: Path) -> list[str]:
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            export = io.read_export(target)
            messages += [reason for _path, reason in export.skipped]
        except DeparrayError as exc:
            messages.append(str(exc))
    messages += [str(w.message) for w in caught]
    return messages


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.key)
def test_reader_messages_are_words(case, tmp_path, monkeypatch) -> None:
    messages: list[str] = []
    if case.alone is not None:
        built = _build_alone(case, tmp_path, monkeypatch)
        messages += _messages_of_reading(built.bad)
        monkeypatch.undo()
    folder, _built = _build_in_folder(case, tmp_path, monkeypatch)
    messages += _messages_of_reading(folder)
    io.release_open_files()
    for message in messages:
        assert_words(message)


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda case: case.key)
def test_model_file_messages_are_words(case, tmp_path) -> None:
    from napari_deparray_ctc.core.errors import ModelFileError
    from napari_deparray_ctc.core.model.loaded import load_model

    path = case.build(tmp_path / "model.pt")
    with pytest.raises(ModelFileError) as info:
        load_model(path, device="cpu")
    assert_words(info.value.reason)


@pytest.mark.parametrize("case", TRAINING_CASES, ids=lambda case: case.key)
def test_training_data_messages_are_words(case) -> None:
    from napari_deparray_ctc.core.errors import TrainingDataError
    from napari_deparray_ctc.core.training.training_set import check_training_set

    with pytest.raises(TrainingDataError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_training_set(case.make().training_set())
    assert_words(str(info.value))


def test_cli_error_lines_are_words(tmp_path, capsys) -> None:
    from napari_deparray_ctc.cli import main

    bad = tmp_path / "notes.pt"
    bad.write_text("just some notes, not a model\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    runs = [
        ["classify", str(empty), "--model", str(bad), "--out", str(tmp_path / "r.csv")],
        ["classify", str(tmp_path / "missing"), "--model", str(bad), "--out", "r.csv"],
        ["train", str(empty), "--out", str(tmp_path / "m.pt"), "--epochs", "0"],
        ["synth", str(tmp_path / "s"), "--cells", "0"],
        ["evaluate", str(empty)],
    ]
    for argv in runs:
        assert main(argv) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
        assert len(lines) == 1, lines
        assert_words(lines[0].split("error:", 1)[1])
