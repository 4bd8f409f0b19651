"""``deparray-ctc calibrate`` (and ``suggest --for calibration``) on tiny synthetic exports.

The model is an untrained resnet18 written with ``save_model`` (no training: the command's
plumbing is what is tested here; the method is tested in
``tests/core/inference/test_site_calibration.py``).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from napari_deparray_ctc.cli import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("deparray-ctc: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """A model file, and a 'shifted' export of 40 cells whose labels.csv lists only 7 cells."""
    import torch

    from napari_deparray_ctc.core.io import read_export
    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    base = tmp_path_factory.mktemp("cal")
    export = base / "siteB"
    argv = ["synth", str(export), "--cells", "40", "--ctc-fraction", "0.3", "--seed", "3"]
    assert main([*argv, "--shifted", "--image-size", "32"]) == 0
    truth = {c.cell_id: c.label for c in read_export(export).cells}
    rows = list(csv.DictReader(open(export / "labels.csv", newline="", encoding="utf-8")))
    kept = [r for r in rows if r["label"] == "CTC"][:2] + [r for r in rows if r["label"] == "WBC"][
        :5
    ]
    with open(export / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    torch.manual_seed(0)
    model = base / "model.pt"
    meta = {"arch": "resnet18", "threshold": 0.5, "image_size": 32, "created": "2025-01-01"}
    save_model(model, build_network("resnet18").eval(), meta)
    return model, export, truth


def test_too_few_labelled_cells_are_refused_before_any_pixel_is_read(site, tmp_path, capsys):
    model, export, _ = site
    out = tmp_path / "site.pt"
    assert main(["calibrate", str(model), str(export), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert (
        "calibration needs at least 5 CTC and 5 WBC cells with a label; "
        f"{export} has 2 CTC and 5 WBC (and 33 cells without a label)"
    ) in line
    assert not out.exists()


def test_the_site_model_from_labels_csv_and_the_annotation_sidecar(site, tmp_path, capsys):
    from napari_deparray_ctc.core.annotations.sidecars import save_annotations, sidecar_path

    model, export, truth = site
    work = tmp_path / "siteB"
    shutil.copytree(export, work)
    # suggest the cells worth labelling for a calibration, then "label" them in napari
    picks = tmp_path / "picks.csv"
    argv = ["suggest", str(work), "--model", str(model), "--for", "calibration", "--n", "12"]
    assert main([*argv, "--out", str(picks), "--threads", "1"]) == 0
    picked = [row["cell_id"] for row in csv.DictReader(open(picks, encoding="utf-8"))]
    assert len(picked) == 12
    ctcs = [c for c, label in truth.items() if label == "CTC"]
    save_annotations(sidecar_path(work), {c: truth[c] for c in picked + ctcs[2:6]})
    out = tmp_path / "site.pt"
    capsys.readouterr()
    argv = ["calibrate", str(model), str(work), "--out", str(out), "--adapt", "--threads", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"calibrated {model} for {work} on" in text
    assert "BatchNorm statistics re-estimated" in text
    assert f"site model written to {out}" in text
    assert main(["info", str(out)]) == 0
    card = capsys.readouterr().out
    assert "calibrated for a site:" in card and "labelled cells of 40" in card
    assert "site profile: calibrated from model.pt (SHA-256" in card
    assert "site BatchNorm statistics: re-estimated on 40" in card
    calls = tmp_path / "calls.csv"
    assert main(["classify", str(work), "--model", str(out), "--out", str(calls)]) == 0
    captured = capsys.readouterr()
    assert f"site model: calibrated for {work}" in captured.err
    assert "look unlike" not in captured.err  # the same site: no shift against its profile


def test_the_model_itself_is_not_overwritten(site, capsys):
    model, export, _ = site
    assert main(["calibrate", str(model), str(export), "--out", str(model)]) == 2
    assert "is the model being calibrated" in _error_line(capsys)
