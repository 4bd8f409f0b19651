"""The ``deparray-ctc`` command line, end to end on tiny synthetic exports.

Most tests call :func:`napari_deparray_ctc.cli.main` in-process (fast); one runs the installed
console script in a subprocess. A single tiny model (32 px, 1 epoch) is trained once per module
and shared; training on every layout is a slow test.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_deparray_ctc.cli import main
from napari_deparray_ctc.cli.output import StderrProgress

N_CELLS = 40
LAYOUTS = ("multipage", "perchannel", "ome", "classdirs", "stack")
# the fastest possible training: every test that trains uses these
TINY = ["--size", "32", "--epochs", "1", "--batch-size", "16", "--threads", "1"]


def _labels_csv(export: Path) -> dict[str, str]:
    with open(export / "labels.csv", newline="", encoding="utf-8") as handle:
        return {row["cell_id"]: row["label"] for row in csv.DictReader(handle)}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("deparray-ctc: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    return errors[0]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """A 40-cell synthetic export (2 samples, 25 % CTC) in every layout, via ``synth``."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for layout in LAYOUTS:
        target = root / layout
        argv = ["synth", str(target), "--cells", str(N_CELLS), "--ctc-fraction", "0.25"]
        argv += ["--seed", "3", "--layout", layout, "--samples", "2"]
        assert main(argv) == 0
        out[layout] = target
    return out


@pytest.fixture(scope="module")
def model_path(exports, tmp_path_factory) -> Path:
    """One tiny model trained through the CLI, shared by the module."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    assert main(["train", str(exports["multipage"]), "--out", str(path), *TINY]) == 0
    return path


def test_synth_writes_every_layout(exports):
    for layout, export in exports.items():
        labels = _labels_csv(export)
        assert len(labels) == N_CELLS, layout
        assert sum(v == "CTC" for v in labels.values()) == 10
        assert any(export.rglob("*.tif")), layout


def test_synth_refuses_non_empty_folder(exports, capsys):
    before = sorted(p.name for p in exports["multipage"].iterdir())
    assert main(["synth", str(exports["multipage"]), "--cells", "5"]) == 2
    assert "not empty" in _error_line(capsys)
    assert sorted(p.name for p in exports["multipage"].iterdir()) == before


def test_train_writes_a_loadable_model(model_path, capsys):
    from napari_deparray_ctc.core.model.loaded import load_model

    model = load_model(model_path, device="cpu")
    assert model.image_size == 32
    assert 0.0 <= model.threshold <= 1.0
    assert model.metadata["train_config"]["epochs"] == 1
    # options not given keep TrainConfig's defaults (the CLI repeats none of them)
    from napari_deparray_ctc.core.training.train import TrainConfig

    assert model.metadata["train_config"]["arch"] == TrainConfig().arch
    assert model.metadata["train_config"]["dapi_strategy"] == TrainConfig().dapi_strategy


@pytest.mark.parametrize("layout", LAYOUTS)
def test_classify_and_evaluate_every_layout(layout, exports, model_path, tmp_path, capsys):
    export = exports[layout]
    out = tmp_path / "results.csv"
    assert main(["classify", str(export), "--model", str(model_path), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    rows = _read_csv(out)
    truth = _labels_csv(export)
    # every cell once, with valid columns
    assert len(rows) == N_CELLS
    assert {r["cell_id"] for r in rows} == set(truth)
    assert set(rows[0]) >= {"cell_id", "path", "p_ctc", "label"}
    for row in rows:
        p, threshold = float(row["p_ctc"]), float(row["threshold"])
        assert 0.0 <= p <= 1.0
        assert row["label"] == ("CTC" if p >= threshold else "WBC")
        assert os.path.isfile(row["path"])
    n_ctc = sum(r["label"] == "CTC" for r in rows)
    assert f"{N_CELLS} cells: {n_ctc} CTC, {N_CELLS - n_ctc} WBC" in stdout

    metrics_json = tmp_path / "metrics.json"
    argv = ["evaluate", str(export), "--model", str(model_path), "--json", str(metrics_json)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "f1" in stdout and "confusion matrix" in stdout and "PR-AUC" in stdout
    import json

    metrics = json.loads(metrics_json.read_text())
    assert metrics["n_cells"] == N_CELLS and metrics["n_ctc"] == 10
    # the metrics agree with the CSV written by classify
    predicted_ctc = {r["cell_id"] for r in rows if r["label"] == "CTC"}
    true_ctc = {c for c, label in truth.items() if label == "CTC"}
    assert metrics["confusion_matrix"]["tp"] == len(predicted_ctc & true_ctc)
    assert metrics["confusion_matrix"]["fp"] == len(predicted_ctc - true_ctc)


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_on_every_layout(layout, exports, tmp_path):
    from napari_deparray_ctc.core.model.loaded import load_model

    path = tmp_path / "m.pt"
    assert main(["train", str(exports[layout]), "--out", str(path), *TINY]) == 0
    assert load_model(path, device="cpu").metadata["data_summary"]["n_cells"] == N_CELLS


def test_classify_skips_unreadable_files_with_one_warning(exports, model_path, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(exports["multipage"], data)
    (data / "broken.tif").write_bytes(b"II*\x00not really a tiff")
    (data / "empty.tif").write_bytes(b"")
    out = tmp_path / "r.csv"
    assert main(["classify", str(data), "--model", str(model_path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1, err
    assert "broken.tif" in warnings[0] and "empty.tif" in warnings[0]
    assert len(_read_csv(out)) == N_CELLS


def test_bad_model_file_is_a_clear_error(exports, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a model")
    out = tmp_path / "r.csv"
    out.write_text("previous results\n")
    assert (
        main(["classify", str(exports["multipage"]), "--model", str(bad), "--out", str(out)]) == 2
    )
    line = _error_line(capsys)
    assert str(bad) in line
    assert out.read_text() == "previous results\n"  # nothing the user had is lost

    missing = tmp_path / "missing.pt"
    argv = ["evaluate", str(exports["multipage"]), "--model", str(missing)]
    assert main(argv) == 2
    assert str(missing) in _error_line(capsys)


def test_foreign_pickle_is_refused_without_running_code(exports, tmp_path, capsys):
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Exploit()))
    argv = [
        "classify",
        str(exports["multipage"]),
        "--model",
        str(evil),
        "--out",
        str(tmp_path / "r.csv"),
    ]
    assert main(argv) == 2
    assert str(evil) in _error_line(capsys)
    assert not marker.exists()


def test_empty_data_is_a_clear_error(model_path, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["classify", str(empty), "--model", str(model_path), "--out", str(tmp_path / "r.csv")]
    assert main(argv) == 2
    assert str(empty) in _error_line(capsys)
    assert not (tmp_path / "r.csv").exists()

    assert main(["train", str(empty), "--out", str(tmp_path / "m.pt"), *TINY]) == 2
    assert str(empty) in _error_line(capsys)
    assert not (tmp_path / "m.pt").exists()

    assert main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "m.pt")]) == 2
    assert "nope" in _error_line(capsys)


def test_single_class_training_set_is_a_clear_error(tmp_path, capsys):
    data = tmp_path / "wbc_only"
    assert main(["synth", str(data), "--cells", "12", "--ctc-fraction", "0"]) == 0
    capsys.readouterr()
    model = tmp_path / "m.pt"
    assert main(["train", str(data), "--out", str(model), *TINY]) == 2
    line = _error_line(capsys)
    assert str(data) in line and "one class" in line
    assert not model.exists()


def test_bad_training_option_is_a_clear_error(exports, tmp_path, capsys):
    argv = ["train", str(exports["multipage"]), "--out", str(tmp_path / "m.pt")]
    assert main([*argv, "--augment", "geometric,sparkle"]) == 2
    assert "sparkle" in _error_line(capsys)
    assert main([*argv, "--dapi-strategy", "telepathy"]) == 2
    assert "telepathy" in _error_line(capsys)
    assert main([*argv, "--epochs", "0"]) == 2
    assert "epochs" in _error_line(capsys)
    assert main([*argv, "--device", "quantum"]) == 2
    assert "device" in _error_line(capsys)
    assert main([*argv, "--morphology", "maybe"]) == 2
    assert "say on or off" in capsys.readouterr().err


def test_switch_options_read_on_and_off():
    import argparse

    from napari_deparray_ctc.cli.options import add_train_options, train_overrides

    parser = argparse.ArgumentParser()
    add_train_options(parser)
    given = train_overrides(parser.parse_args(["--morphology", "on", "--flat-field", "OFF"]))
    assert given == {"morphology": True, "flat_field": False}
    assert train_overrides(parser.parse_args([])) == {}  # left out: TrainConfig's defaults


def test_evaluate_needs_labels(exports, model_path, tmp_path, capsys):
    data = tmp_path / "unlabelled"
    shutil.copytree(exports["multipage"], data)
    (data / "labels.csv").unlink()
    assert main(["evaluate", str(data), "--model", str(model_path)]) == 2
    assert "label" in _error_line(capsys)


def test_evaluate_cross_validation(exports, tmp_path, capsys):
    out = tmp_path / "cv.json"
    argv = ["evaluate", str(exports["multipage"]), "--cv", "2", *TINY, "--json", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "2-fold cross-validation" in stdout and "±" in stdout
    import json

    result = json.loads(out.read_text())
    assert len(result["folds"]) == 2
    assert sum(f["n_test"] for f in result["folds"]) == N_CELLS
    f1s = [f["metrics"]["f1"] for f in result["folds"]]
    assert result["mean"]["f1"] == pytest.approx(np.mean(f1s))


def test_usage_errors_return_2(capsys):
    assert main([]) == 2
    assert main(["classify", "x"]) == 2  # --model and --out are required
    assert main(["evaluate", "x"]) == 2  # neither --model nor --cv
    capsys.readouterr()


def test_train_help_shows_trainconfig_defaults(capsys):
    from napari_deparray_ctc.core.training.train import TrainConfig

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    defaults = TrainConfig()
    assert f"(default: {defaults.arch})" in text
    assert f"(default: {defaults.epochs})" in text
    assert f"(default: {','.join(defaults.augment)})" in text


def test_synth_and_help_do_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from napari_deparray_ctc.cli import main\n"
        f"assert main(['synth', {str(tmp_path / 'x')!r}, '--cells', '4']) == 0\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_console_script(exports, model_path, tmp_path):
    script = Path(sys.executable).with_name("deparray-ctc")
    if not script.exists():
        found = shutil.which("deparray-ctc")
        if found is None:
            pytest.skip("console script deparray-ctc is not installed")
        script = Path(found)
    out = tmp_path / "r.csv"
    proc = subprocess.run(
        [
            str(script),
            "classify",
            str(exports["ome"]),
            "--model",
            str(model_path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(_read_csv(out)) == N_CELLS
    assert f"{N_CELLS} cells:" in proc.stdout


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--cells", "60", "--test-cells", "40", *TINY]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "held-out SHIFTED-optics domain" in stdout and str(out / "model.pt") in stdout
    assert (out / "model.pt").is_file()
    rows = _read_csv(out / "shifted_test_predictions.csv")
    assert len(rows) == 40
    # every call says what it is calibrated for, one value for the whole export
    (calibration,) = {r["calibration"] for r in rows}
    assert calibration in ("training instrument", "NOT CALIBRATED for this instrument")
    # a second demo into the same folder is refused, nothing overwritten
    before = (out / "model.pt").read_bytes()
    assert main(argv) == 2
    assert (out / "model.pt").read_bytes() == before


def test_progress_line_without_terminal():
    stream = io.StringIO()
    bar = StderrProgress("work", total=4, stream=stream, log_every_s=0.0)
    for done in range(1, 5):
        bar.update(done)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("work [") and "4/4" in lines[-1] and "100%" in lines[-1]
    assert len(lines) == 4  # the final state is not printed twice
