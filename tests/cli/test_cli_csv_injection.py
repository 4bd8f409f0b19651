"""CSV injection (issue 21): cells whose file names are spreadsheet formulas come out of every
CSV of ``deparray-ctc`` as text (``classify --out``, ``--summary``, ``suggest --out``), read back
as they were, and the HTML report shows them safely."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from napari_deparray_ctc.cli import main
from napari_deparray_ctc.core.annotations.cell_table import read_cell_table
from napari_deparray_ctc.core.annotations.csv_safe import read_csv
from napari_deparray_ctc.core.annotations.labels import read_labels_csv, write_labels_csv

#: a file called ``=HYPERLINK("x","click")&A1_BF.tif`` (no "/" in a file name; and the reader
#: drops separators before the channel token, so the id ends in a letter or digit here)
FORMULA = '=HYPERLINK("x","click")&A1'
NAMES = [FORMULA, "@cmd", "-2+3", "a$\\frac$b"]  # the last would break matplotlib's mathtext
FORMULA_SAMPLE = "=SUM(1)"
HTML_SAMPLE = "<b>s2</b>"


def _raw_cells(path: Path) -> list[str]:
    """Every cell of a CSV as a spreadsheet sees it (no unescaping)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def _live(cell: str) -> bool:
    if cell[:1] not in ("=", "+", "-", "@", "\t", "\r"):
        return False
    try:
        float(cell)
    except ValueError:
        return True
    return False


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """12 labelled cells (one file per channel); four CTCs renamed to :data:`NAMES`."""
    out = tmp_path_factory.mktemp("inj") / "export"
    argv = ["synth", str(out), "--cells", "12", "--ctc-fraction", "0.5", "--seed", "2"]
    assert main([*argv, "--layout", "perchannel", "--samples", "2"]) == 0
    records = read_labels_csv(out / "labels.csv")
    ctcs = [cid for cid, r in records.items() if r.label == "CTC"][: len(NAMES)]
    renamed = dict(zip(ctcs, NAMES, strict=True))
    for old, new in renamed.items():
        for path in out.glob(f"{old}_*.tif"):
            path.rename(path.with_name(path.name.replace(old, new, 1)))
    rows = []
    for cid, record in records.items():
        sample = FORMULA_SAMPLE if record.group == "S01" else HTML_SAMPLE
        rows.append((renamed.get(cid, cid), record.label, sample))
    write_labels_csv(out / "labels.csv", rows)
    return out


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """An untrained 32 px model (the calls do not matter here)."""
    import torch

    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inj_model") / "model.pt"
    meta = {"arch": "resnet18", "threshold": 0.5, "image_size": 32}
    save_model(path, build_network("resnet18").eval(), meta)
    return path


def test_classify_out_and_summary_escape_formulas_and_read_back(export, model_path, tmp_path):
    out, summary = tmp_path / "calls.csv", tmp_path / "summary.csv"
    argv = ["classify", str(export), "--model", str(model_path), "--out", str(out)]
    assert main([*argv, "--summary", str(summary), "--threads", "1"]) == 0
    raw = _raw_cells(out)
    assert "'" + FORMULA in raw and "'@cmd" in raw and "'-2+3" in raw
    assert not any(_live(cell) for cell in raw)
    ids = [row["cell_id"] for row in read_cell_table(out)]
    assert set(NAMES) <= set(ids)
    paths = {row["cell_id"]: row["path"] for row in read_cell_table(out)}
    assert Path(paths[FORMULA]).name == f"{FORMULA}_BF.tif"
    raw_summary = _raw_cells(summary)
    assert "'" + FORMULA_SAMPLE in raw_summary and not any(_live(c) for c in raw_summary)
    assert {row["sample"] for row in read_csv(summary)} == {FORMULA_SAMPLE, HTML_SAMPLE}


def test_suggest_out_escapes_formulas_and_reads_back(export, model_path, tmp_path):
    out = tmp_path / "next.csv"
    argv = ["suggest", str(export), "--model", str(model_path), "--out", str(out)]
    assert main([*argv, "--n", "12", "--include-labelled", "--threads", "1"]) == 0
    raw = _raw_cells(out)
    assert not any(_live(cell) for cell in raw)
    assert set(NAMES) <= {row["cell_id"] for row in read_csv(out)}


def test_evaluate_report_escapes_names_and_draws_ids_as_text(export, model_path, tmp_path):
    report = tmp_path / "report.html"
    argv = ["evaluate", str(export), "--model", str(model_path), "--report", str(report)]
    assert main([*argv, "--threads", "1"]) == 0
    text = report.read_text(encoding="utf-8")
    assert HTML_SAMPLE not in text and "&lt;b&gt;s2&lt;/b&gt;" in text
