"""Bad model files through every entry point: ``core.model.load_model``, ``deparray-ctc
classify`` and the "Classify cells" widget.

Each file of :data:`MODEL_CASES` is refused with a :class:`~napari_deparray_ctc.core.model.loaded.
ModelFileError` naming the file and the reason; the CLI exits with status 2 and one error line
and keeps the previous CSV; the widget shows one error notification and stays usable (a good
model then runs). A malicious pickle never runs: its payload would create a marker file, and
the marker is never there. ``tests/core/test_model.py`` covers more malformed payloads at the
core level; this suite checks that every entry point passes the refusal on.
"""

from __future__ import annotations

import csv
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import PLUGIN, first_quote, quote_matches, write_good_cells

torch = pytest.importorskip("torch")

from napari_deparray_ctc.core.model.loaded import (  # noqa: E402
    FORMAT_NAME,
    FORMAT_VERSION,
    ModelFileError,
    build_network,
    load_model,
    save_model,
)

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "bad_input.md"
MARKER_NAME = "pwned-marker"


class _Payload:
    """Unpickles to ``open(marker, "w")``: a file appears if anything unpickles it fully."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _save_tiny(path: Path, arch: str = "resnet18", **meta) -> Path:
    torch.manual_seed(0)
    metadata = {"arch": arch, "threshold": 0.5, "image_size": 32, **meta}
    save_model(path, build_network(arch), metadata)
    return path


def _rewrite(path: Path, change: Callable[[dict], None]) -> Path:
    """Save a good model, then change its payload (as a foreign tool or a newer version would)."""
    _save_tiny(path)
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def _pickle_plain(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"format": FORMAT_NAME, "state_dict": _Payload(_marker(path))}))
    return path


def _pickle_in_torch_zip(path: Path) -> Path:
    torch.save({"format": FORMAT_NAME, "metadata": _Payload(_marker(path))}, path)
    return path


def _marker(path: Path) -> Path:
    return path.parent / MARKER_NAME


def _other_arch(path: Path) -> Path:
    """resnet34 weights under a resnet18 label."""

    def change(payload: dict) -> None:
        payload["state_dict"] = {
            k: v.float() if v.is_floating_point() else v
            for k, v in build_network("resnet34").state_dict().items()
        }

    return _rewrite(path, change)


def _rgb_input(path: Path) -> Path:
    """A network for 3-channel (RGB) input: conv1 takes 3 planes, not the BF plane."""

    def change(payload: dict) -> None:
        payload["state_dict"]["conv1.weight"] = torch.zeros(64, 3, 7, 7)

    return _rewrite(path, change)


def _two_outputs(path: Path) -> Path:
    """A two-logit head (softmax classifier) instead of the one P(CTC) logit."""

    def change(payload: dict) -> None:
        payload["state_dict"]["fc.weight"] = torch.zeros(2, 512)
        payload["state_dict"]["fc.bias"] = torch.zeros(2)

    return _rewrite(path, change)


def _future_version(path: Path) -> Path:
    def change(payload: dict) -> None:
        payload["format_version"] = FORMAT_VERSION + 1

    return _rewrite(path, change)


def _truncated(keep: float) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        content = _save_tiny(path).read_bytes()
        path.write_bytes(content[: int(len(content) * keep)])
        return path

    return build


def _random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(11).bytes(50_000))
    return path


def _text_file(path: Path) -> Path:
    """What a user picks by mistake: notes saved as text (torch says "pop from empty list")."""
    path.write_text("hello this is a text file\nsecond line\n")
    return path


def _csv_file(path: Path) -> Path:
    """A results table (it starts with "c", which a protocol-0 pickle also does)."""
    path.write_text("cell_id,path,p_ctc,label,threshold\ncell0000,a.tif,0.9,CTC,0.5\n")
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _bare_state_dict(path: Path) -> Path:
    """What ``torch.save(model.state_dict())`` writes: weights without metadata."""
    torch.save(build_network("resnet18").state_dict(), path)
    return path


@dataclass(frozen=True)
class ModelCase:
    key: str
    title: str
    build: Callable[[Path], Path]
    reason: str  # fragment of ModelFileError.reason
    doc: str  # README: what happens


# fmt: off
MODEL_CASES = [
    ModelCase("pickle", "Malicious pickle (plain pickle)", _pickle_plain, "refused",
              "refused, nothing executed: `refused: the file contains pickled Python objects "
              "that a model file must not contain (loading them could run code); nothing in it "
              "was executed`"),
    ModelCase("pickle-in-torch-zip", "Malicious pickle inside a torch zip file",
              _pickle_in_torch_zip, "nothing in it was executed",
              "refused, nothing executed (same message)"),
    ModelCase("other-arch", "Weights of another architecture (resnet34 labelled resnet18)",
              _other_arch, "do not fit a one-channel resnet18",
              "refused: `the weights do not fit a one-channel resnet18 (...)`"),
    ModelCase("rgb-input", "Another input (3-channel RGB `conv1`)", _rgb_input,
              "do not fit a one-channel resnet18",
              "refused: `the weights do not fit a one-channel resnet18 (other sizes in "
              "conv1.weight)`"),
    ModelCase("two-outputs", "Another head (2 outputs instead of 1)", _two_outputs,
              "do not fit a one-channel resnet18",
              "refused: `the weights do not fit a one-channel resnet18 (other sizes in "
              "fc.weight, fc.bias)`"),
    ModelCase("future-version", "File from a future format version", _future_version,
              "written by a newer napari-deparray-ctc",
              f"refused: `written by a newer napari-deparray-ctc (format version "
              f"{FORMAT_VERSION + 1}; this version reads up to {FORMAT_VERSION}); please "
              f"upgrade`"),
    ModelCase("truncated-start", "Truncated model file (first 10 %)", _truncated(0.1),
              "truncated", "refused: `is not a model file, or it is truncated or damaged`"),
    ModelCase("truncated-end", "Truncated model file (last bytes missing)", _truncated(0.995),
              "truncated", "refused: `is not a model file, or it is truncated or damaged`"),
    ModelCase("random-bytes", "Random bytes named `.pt`", _random_bytes, "not a model file",
              "refused: `is not a model file, or it is truncated or damaged (it is neither a "
              "torch file nor a pickle)`"),
    ModelCase("text-file", "A text file chosen as the model", _text_file, "is a text file",
              "refused: `is a text file, not a model file (a model file is written by "
              "training, ...)`"),
    ModelCase("csv-file", "A CSV file chosen as the model", _csv_file, "is a text file",
              "refused: `is a text file, not a model file (...)`"),
    ModelCase("empty", "Empty file", _empty, "file is empty", "refused: `the file is empty`"),
    ModelCase("bare-state-dict", "Bare state dict (`torch.save(model.state_dict())`)",
              _bare_state_dict, "bare state dict",
              "refused: `not a napari-deparray-ctc model: it is a bare state dict without "
              "metadata (...)`"),
]
# fmt: on


@pytest.fixture(params=MODEL_CASES, ids=lambda case: case.key)
def bad_model(request, tmp_path) -> tuple[ModelCase, Path]:
    folder = tmp_path / "models"
    folder.mkdir()
    case: ModelCase = request.param
    return case, case.build(folder / "model.pt")


def test_a_pickle_payload_is_live_when_unpickled_naively(tmp_path) -> None:
    """The malicious files really are malicious: a plain unpickler runs the payload."""
    path = _pickle_plain(tmp_path / "model.pt")
    pickle.loads(path.read_bytes())["state_dict"].close()
    assert _marker(path).exists()


def test_load_model_refuses(bad_model) -> None:
    case, path = bad_model
    with pytest.raises(ModelFileError) as info:
        load_model(path, device="cpu")
    assert str(info.value).startswith(f"{path}: ")
    assert case.reason in str(info.value)
    # words, not internals: no exception names, no Python reprs
    assert not re.search(r"[A-Z][a-z]+(Error|Exception)\b|\[enforce|'\w+'", info.value.reason)
    quote = first_quote(case.doc)
    if quote is not None:  # the README quotes the message right
        assert quote_matches(quote, str(info.value)), (quote, str(info.value))
    assert not _marker(path).exists()


def test_cli_classify_refuses(bad_model, tmp_path, run_cli) -> None:
    case, path = bad_model
    data = write_good_cells(tmp_path / "export", 2)[0].parent
    out = tmp_path / "calls.csv"
    out.write_text("previous results\n")
    result = run_cli("classify", data, "--model", path, "--out", out, "--device", "cpu")
    assert result.code == 2, result.err
    (line,) = result.error_lines
    assert str(path) in line and case.reason in line, line
    assert out.read_text() == "previous results\n"  # nothing the user had is lost
    assert not _marker(path).exists()


@pytest.mark.parametrize("command", ["evaluate"])
def test_cli_evaluate_refuses_a_pickle(command, tmp_path, run_cli) -> None:
    path = _pickle_in_torch_zip(tmp_path / "model.pt")
    data = write_good_cells(tmp_path / "export", 2)[0].parent
    result = run_cli(command, data, "--model", path, "--device", "cpu")
    assert result.code == 2
    assert str(path) in result.error_lines[0]
    assert not _marker(path).exists()


def test_classify_widget_refuses_each_and_stays_usable(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, tiny_model
) -> None:
    from napari_deparray_ctc.napari.widgets.classify import widget as cw
    from napari_deparray_ctc.napari.widgets.classify.inputs import CONFIG_DIR_ENV

    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "settings"))  # not the user's settings
    errors: list[str] = []
    monkeypatch.setattr(
        cw, "notify", lambda kind, message: errors.append(str(message)) if kind == "error" else None
    )
    viewer = make_napari_viewer()
    widget = cw.ClassifyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Classify cells")
    export = write_good_cells(tmp_path / "export", 3)[0].parent
    viewer.open(str(export), plugin=PLUGIN)

    def run() -> None:
        worker = widget.run()
        assert worker is not None, widget.status_label.text()
        qtbot.waitUntil(lambda: not widget.is_running, timeout=120_000)

    for case in MODEL_CASES:
        folder = tmp_path / case.key
        folder.mkdir()
        path = case.build(folder / "model.pt")
        widget.set_model_path(path)
        before = len(errors)
        run()
        assert len(errors) == before + 1, (case.key, errors[before:])
        assert str(path) in errors[-1] and case.reason in errors[-1], (case.key, errors[-1])
        assert widget.results is None and widget.run_button.isEnabled()
        assert not _marker(path).exists(), case.key

    widget.set_model_path(tiny_model)  # the same widget then works with a good model
    run()
    assert widget.results is not None and len(widget.results) == 3
    assert len(errors) == len(MODEL_CASES)


def test_docs_table_lists_every_model_case() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [row for row in markdown_rows() if row not in text]
    assert not missing, "docs/bad_input.md is out of date; missing rows:\n" + "\n".join(missing)


def markdown_rows() -> list[str]:
    """Rows of the model-file table in ``docs/bad_input.md``."""
    return [f"| {case.title} | {case.doc} |" for case in MODEL_CASES]


def test_csv_of_a_good_run_is_untouched_by_a_later_refusal(tmp_path, tiny_model, run_cli) -> None:
    """A refused model after a good run: the good run's CSV stays byte-identical."""
    data = write_good_cells(tmp_path / "export", 2)[0].parent
    out = tmp_path / "calls.csv"
    assert run_cli("classify", data, "--model", tiny_model, "--out", out).code == 0
    good = out.read_bytes()
    with open(out, newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    bad = _future_version(tmp_path / "newer.pt")
    assert run_cli("classify", data, "--model", bad, "--out", out).code == 2
    assert out.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["calls.csv", "export", "newer.pt"]


if __name__ == "__main__":  # print the rows for docs/bad_input.md
    print("\n".join(markdown_rows()))
