"""Unusable training data is refused with a clear message BEFORE any training work starts.

Each case of :data:`TRAINING_CASES` goes through ``core.train.train`` (an in-memory
:class:`~napari_deparray_ctc.core.training.TrainingSet`, as the training widget builds it) and
through ``deparray-ctc train`` (the same cells written as a class-folder export). Building the
network or the optimiser is patched to fail loudly, so a test passes only if the refusal comes
first; an existing model file at ``--out`` / ``config.out`` is left byte-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import first_quote, quote_matches, write_multipage

pytest.importorskip("torch")

from napari_deparray_ctc.core.errors import TrainingDataError
from napari_deparray_ctc.core.model import network as core_network
from napari_deparray_ctc.core.training import TrainingSet
from napari_deparray_ctc.core.training import fit as core_fit
from napari_deparray_ctc.core.training.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "bad_input.md"
SIDE = 24


def _cell(seed: int, dtype: str = "uint16") -> np.ndarray:
    """A distinct cell-like BF image: a disc on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    radius = 5 + seed % 5
    disc = np.hypot(yy - SIDE / 2, xx - SIDE / 2) < radius
    image = 1000 + 800 * disc + rng.normal(0, 40, (SIDE, SIDE))
    return image.astype(dtype)


@dataclass
class Cells:
    """What a case trains on: BF images (float32 when NaN is needed), labels and ids."""

    bf: list[np.ndarray]
    labels: list[str | None]

    @property
    def ids(self) -> list[str]:
        return [f"cell{i:04d}" for i in range(len(self.bf))]

    def training_set(self) -> TrainingSet:
        return TrainingSet(bf=list(self.bf), labels=list(self.labels), cell_ids=self.ids)

    def write_export(self, folder: Path) -> Path:
        """A class-folder export (``CTC/``, ``WBC/``, unlabelled cells at the top)."""
        for cell_id, image, label in zip(self.ids, self.bf, self.labels, strict=True):
            where = folder / label if label else folder
            write_multipage(where / f"{cell_id}.tif", [image], ["BF"])
        return folder


def _balanced(n: int = 12) -> list[str]:
    return ["CTC" if i % 2 else "WBC" for i in range(n)]


def _one_class() -> Cells:
    return Cells([_cell(i) for i in range(12)], ["CTC"] * 12)


def _identical() -> Cells:
    return Cells([_cell(0)] * 12, _balanced())


def _with_nan() -> Cells:
    images = [_cell(i, "float32") for i in range(12)]
    images[5][3:6, 3:6] = np.nan
    return Cells(images, _balanced())


def _with_inf() -> Cells:
    images = [_cell(i, "float32") for i in range(12)]
    images[7][0, 0] = np.inf
    return Cells(images, _balanced())


def _three_cells() -> Cells:
    return Cells([_cell(i) for i in range(3)], ["CTC", "WBC", "WBC"])


def _unlabelled() -> Cells:
    return Cells([_cell(i) for i in range(12)], [None] * 12)


def _one_of_a_class() -> Cells:
    labels = ["WBC"] * 11 + ["CTC"]
    return Cells([_cell(i) for i in range(12)], labels)


@dataclass(frozen=True)
class TrainingCase:
    key: str
    title: str
    make: Callable[[], Cells]
    reason: str  # fragment of the TrainingDataError message
    doc: str


# fmt: off
TRAINING_CASES = [
    TrainingCase("one-class", "One class only (12 CTC, no WBC)", _one_class, "only one class",
                 "refused: `only one class: all 12 labelled cells are CTC; label at least 2 WBC "
                 "cells too`"),
    TrainingCase("identical", "All images identical", _identical, "identical",
                 "refused: `all 12 bright-field images are identical; nothing to learn from`"),
    TrainingCase("nan", "NaN pixels in an image", _with_nan, "NaN or infinite pixels",
                 "refused, naming the cells: `bright-field image(s) with NaN or infinite "
                 "pixels: cell0005`"),
    TrainingCase("inf", "Infinite pixels in an image", _with_inf, "NaN or infinite pixels",
                 "refused, naming the cells: `bright-field image(s) with NaN or infinite "
                 "pixels: cell0007`"),
    TrainingCase("three-cells", "3 cells in total", _three_cells, "too few labelled cells",
                 "refused: `too few labelled cells: 3 (1 CTC, 2 WBC); at least 8 are needed`"),
    TrainingCase("one-of-a-class", "A single cell of one class (11 WBC, 1 CTC)",
                 _one_of_a_class, "too few CTC cells",
                 "refused: `too few CTC cells: 1; at least 2 of each class are needed ...`"),
    TrainingCase("unlabelled", "No cell labelled", _unlabelled, "none of the 12 cells is labelled",
                 "refused: `none of the 12 cells is labelled CTC or WBC; annotate some cells "
                 "first`"),
]
# fmt: on


@pytest.fixture
def no_training_work(monkeypatch) -> list[str]:
    """Fail loudly if the network or the optimiser is ever built; records attempts."""
    attempts: list[str] = []

    def forbidden(name: str):
        def fail(*args, **kwargs):
            attempts.append(name)
            raise AssertionError(f"{name} ran: training work started before the data check")

        return fail

    monkeypatch.setattr(core_network, "build_network", forbidden("build_network"))
    monkeypatch.setattr(core_fit, "_adamw", forbidden("the optimiser"))
    return attempts


@pytest.fixture(params=TRAINING_CASES, ids=lambda case: case.key)
def case(request) -> TrainingCase:
    return request.param


def test_core_train_refuses_before_any_work(case, no_training_work, tmp_path) -> None:
    out = tmp_path / "model.pt"
    out.write_bytes(b"the previous model")
    config = TrainConfig(epochs=1, image_size=32, batch_size=4, out=str(out), device="cpu")
    with pytest.raises(TrainingDataError) as info:
        train(config, data=case.make().training_set())
    assert case.reason in str(info.value), str(info.value)
    quote = first_quote(case.doc)
    if quote is not None:  # the README quotes the message right
        assert quote_matches(quote, str(info.value)), (quote, str(info.value))
    assert no_training_work == []
    assert out.read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary files


def test_cli_train_refuses_before_any_work(case, no_training_work, tmp_path, run_cli) -> None:
    export = case.make().write_export(tmp_path / "export")
    out = tmp_path / "model.pt"
    out.write_bytes(b"the previous model")
    argv = ["train", export, "--out", out, "--epochs", "1", "--size", "32", "--device", "cpu"]
    result = run_cli(*argv)
    assert result.code == 2, result.err
    (line,) = result.error_lines
    assert str(export) in line and case.reason in line, line
    assert no_training_work == []
    assert out.read_bytes() == b"the previous model"


def test_the_guard_would_notice_training_work(no_training_work) -> None:
    """The patched builder is the one training calls: good data reaches it (and is stopped)."""
    cells = Cells([_cell(i) for i in range(12)], _balanced())
    config = TrainConfig(epochs=1, image_size=32, batch_size=4, device="cpu")
    with pytest.raises(AssertionError, match="build_network ran"):
        train(config, data=cells.training_set())
    assert no_training_work == ["build_network"]


def markdown_rows() -> list[str]:
    """Rows of the training-data table in ``docs/bad_input.md``."""
    return [f"| {case.title} | {case.doc} |" for case in TRAINING_CASES]


def test_docs_table_lists_every_training_case() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [row for row in markdown_rows() if row not in text]
    assert not missing, "docs/bad_input.md is out of date; missing rows:\n" + "\n".join(missing)


if __name__ == "__main__":  # print the rows for docs/bad_input.md
    print("\n".join(markdown_rows()))
