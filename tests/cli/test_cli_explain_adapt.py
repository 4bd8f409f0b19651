"""The explain / adapt / learn-actively commands and options of ``deparray-ctc``, end to end.

``explain``, ``suggest``, ``info``, ``export``, ``classify --summary``, ``evaluate --report``,
``train --init-from`` and ``train --note`` on tiny synthetic exports, with one tiny model
(32 px, 1 epoch) trained once per module through the CLI.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_deparray_ctc.cli import main
from napari_deparray_ctc.core.inference.counts import NOT_CALIBRATED

N_CELLS = 40
TINY = ["--size", "32", "--epochs", "1", "--batch-size", "16", "--threads", "1"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("deparray-ctc: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """40 cells, 2 samples (S01, S02), 25 % CTC, labelled."""
    out = tmp_path_factory.mktemp("ea") / "export"
    argv = ["synth", str(out), "--cells", str(N_CELLS), "--ctc-fraction", "0.25", "--seed", "5"]
    assert main([*argv, "--samples", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def model_path(export, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ea_model") / "model.pt"
    argv = ["train", str(export), "--out", str(path), *TINY, "--note", "first model, lab A"]
    assert main(argv) == 0
    return path


def test_train_note_and_info_show_the_model_card(model_path, capsys):
    capsys.readouterr()
    assert main(["info", str(model_path)]) == 0
    text = capsys.readouterr().out
    assert "resnet18, 32 px bright-field input" in text
    assert "trained on 40 cells (10 CTC, 30 WBC)" in text
    assert "note from the trainer: first model, lab A" in text
    assert "shift check: image features of 40 training cells" in text
    for words in ("validation", "threshold", "calibration", "augmentation", "DAPI", "torch"):
        assert words in text
    assert main(["info", str(model_path), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["note"] == "first model, lab A" and "feature_summary" in meta


def test_train_init_from_fine_tunes_that_model(export, model_path, tmp_path, capsys):
    from napari_deparray_ctc.core.model.loaded import load_model

    out = tmp_path / "m2.pt"
    # no --size: the input size comes from the starting model
    argv = ["train", str(export), "--out", str(out), "--init-from", str(model_path)]
    assert main([*argv, "--epochs", "1", "--batch-size", "16", "--threads", "1"]) == 0
    assert f"fine-tuned from {model_path}" in capsys.readouterr().out
    meta = load_model(out, device="cpu").metadata
    assert meta["image_size"] == 32
    assert meta["train_config"]["pretrained"] == str(model_path)
    assert "model.pt" in str(meta.get("pretrained"))

    # only the last layer
    head = tmp_path / "m3.pt"
    argv_head = ["train", str(export), "--out", str(head), "--init-from", str(model_path)]
    assert main([*argv_head, *TINY, "--train-layers", "head"]) == 0
    assert load_model(head, device="cpu").metadata["train_config"]["train_layers"] == "head"
    capsys.readouterr()

    assert main([*argv[:4], "--init-from", str(tmp_path / "nope.pt"), *TINY]) == 2
    assert "nope.pt" in _error_line(capsys)
    assert main([*argv, "--pretrained", "auto", *TINY]) == 2
    assert "--init-from" in _error_line(capsys)


def test_classify_summary_one_row_per_sample(export, model_path, tmp_path, capsys):
    out, summary = tmp_path / "r.csv", tmp_path / "s.csv"
    argv = ["classify", str(export), "--model", str(model_path), "--out", str(out)]
    assert main([*argv, "--summary", str(summary)]) == 0
    captured = capsys.readouterr()
    assert "look unlike" not in captured.err  # cells of the training instrument
    rows = _read_csv(summary)
    assert list(rows[0]) == [
        "sample",
        "n_cells",
        "n_called_ctc",
        "expected_ctc",
        "ctc_low",
        "ctc_high",
        "threshold",
        "calibration",
    ]
    assert {r["calibration"] for r in rows} == {"training instrument"}
    assert {r["calibration"] for r in _read_csv(out)} == {"training instrument"}
    assert "NOT CALIBRATED" not in captured.out
    assert [r["sample"] for r in rows] == ["S01", "S02"]
    assert sum(int(r["n_cells"]) for r in rows) == N_CELLS
    cells = _read_csv(out)
    for row in rows:
        assert int(row["ctc_low"]) <= float(row["expected_ctc"]) <= int(row["ctc_high"])
        assert float(row["threshold"]) == pytest.approx(float(cells[0]["threshold"]), abs=1e-4)
    assert int(rows[0]["n_called_ctc"]) + int(rows[1]["n_called_ctc"]) == sum(
        c["label"] == "CTC" for c in cells
    )
    assert f"per-sample counts written to {summary}" in captured.out

    # no sample ids: the export's name is the sample
    plain = tmp_path / "plain_export"
    shutil.copytree(export, plain)
    (plain / "labels.csv").unlink()
    argv = ["classify", str(plain), "--model", str(model_path), "--out", str(tmp_path / "p.csv")]
    assert main([*argv, "--summary", str(tmp_path / "ps.csv")]) == 0
    assert [r["sample"] for r in _read_csv(tmp_path / "ps.csv")] == ["plain_export"]


def test_classify_warns_once_on_cells_from_another_instrument(model_path, tmp_path, capsys):
    other = tmp_path / "other"
    argv = ["synth", str(other), "--cells", "30", "--shifted", "--seed", "9"]
    assert main(argv) == 0
    capsys.readouterr()
    summary = tmp_path / "o_samples.csv"
    argv = ["classify", str(other), "--model", str(model_path), "--out", str(tmp_path / "o.csv")]
    assert main([*argv, "--summary", str(summary)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "look unlike" in line]
    assert len(warnings) == 1
    assert "30 cells" in warnings[0] and "%" in warnings[0]
    # every surface that shows counts says they are not calibrated for this instrument
    assert captured.out.startswith(f"{NOT_CALIBRATED}: 30 cells")
    assert f"{NOT_CALIBRATED}: the counts and intervals below may be far off" in captured.out
    assert {r["calibration"] for r in _read_csv(summary)} == {NOT_CALIBRATED}
    assert {r["calibration"] for r in _read_csv(tmp_path / "o.csv")} == {NOT_CALIBRATED}


def test_explain_writes_one_map_per_cell(export, model_path, tmp_path, capsys):
    out = tmp_path / "maps"
    argv = ["explain", str(export), "--model", str(model_path), "--out", str(out), "--steps", "2"]
    assert main(argv) == 0
    files = sorted(out.glob("*_saliency.tif"))
    assert len(files) == N_CELLS
    assert files[0].name == "cell0000_saliency.tif"
    for path in files[:5]:
        saliency = tifffile.imread(path)
        assert saliency.dtype == np.float32 and saliency.shape == (64, 64)
        assert saliency.min() >= 0 and abs(float(saliency.sum()) - 1.0) < 1e-4
    assert f"{N_CELLS} saliency maps written to {out}" in capsys.readouterr().out


def test_suggest_lists_unlabelled_cells(export, model_path, tmp_path, capsys):
    data = tmp_path / "unlabelled"
    shutil.copytree(export, data)
    (data / "labels.csv").unlink()
    out = tmp_path / "ids.csv"
    argv = ["suggest", str(data), "--model", str(model_path), "--n", "6", "--out", str(out)]
    assert main(argv) == 0
    rows = _read_csv(out)
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert len({r["cell_id"] for r in rows}) == 6
    assert "6 cells to label next" in capsys.readouterr().out
    # every cell labelled: nothing to suggest unless asked
    argv = ["suggest", str(export), "--model", str(model_path), "--n", "3"]
    assert main(argv) == 2
    assert "already has a label" in _error_line(capsys)
    assert main([*argv, "--include-labelled"]) == 0


def test_export_onnx(model_path, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    assert main(["export", str(model_path), str(out)]) == 0
    assert out.is_file() and f"ONNX model written to {out}" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "nope.pt"), str(out)]) == 2
    assert "nope.pt" in _error_line(capsys)


def test_evaluate_report(export, model_path, tmp_path, capsys):
    report = tmp_path / "r.html"
    argv = ["evaluate", str(export), "--model", str(model_path), "--report", str(report)]
    assert main(argv) == 0
    assert f"report written to {report}" in capsys.readouterr().out
    text = report.read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") >= 4 and "S01" in text
    assert main(["evaluate", str(export), "--cv", "2", "--report", str(report)]) == 2
    assert "--report" in _error_line(capsys)


def test_help_lists_the_new_commands(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("explain", "suggest", "info", "export"):
        assert command in text


def test_classify_adapt_tta_and_pixel_size_change_the_scores(export, model_path, tmp_path):
    from napari_deparray_ctc.core.io import read_export

    declared = {cell.pixel_size_um for cell in read_export(export).cells}
    assert len(declared) == 1 and None not in declared  # the synthetic export declares one
    base = ["classify", str(export), "--model", str(model_path)]

    def scores(*extra: str) -> dict[str, float]:
        out = tmp_path / f"calls{len(list(tmp_path.iterdir()))}.csv"
        assert main([*base, "--out", str(out), *extra]) == 0
        return {row["cell_id"]: float(row["p_ctc"]) for row in _read_csv(out)}

    plain = scores()
    assert scores("--pixel-size", str(declared.pop())) == pytest.approx(plain, abs=1e-6)
    for extra in (["--pixel-size", "0.3"], ["--adapt"], ["--tta"]):
        changed = scores(*extra)
        assert changed.keys() == plain.keys(), extra
        assert max(abs(changed[k] - plain[k]) for k in plain) > 1e-4, extra


def test_classify_refuses_a_nonsense_pixel_size(export, model_path, tmp_path, capsys):
    argv = ["classify", str(export), "--model", str(model_path), "--out", str(tmp_path / "c.csv")]
    assert main([*argv, "--pixel-size", "-1"]) == 2
    assert "--pixel-size must be a positive size in micrometres" in _error_line(capsys)
