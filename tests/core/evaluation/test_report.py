"""The HTML report (``core.report``): self-contained, every embedded image decodes and shows
something, and a headless browser renders the page (when Chromium is installed)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from napari_deparray_ctc.core.evaluation.report import build_report, write_report
from napari_deparray_ctc.core.model.loaded import LoadedModel, build_network
from napari_deparray_ctc.core.synth import synth_cells

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(0)
    meta = {
        "arch": "resnet18",
        "threshold": 0.5,
        "image_size": 32,
        "calibration": {"method": "none"},
        "metrics": {
            "threshold": 0.5,
            "f1": 0.7,
            "precision": 0.7,
            "recall": 0.7,
            "confusion_matrix": {"tp": 14, "fn": 6, "fp": 6, "tn": 54},
        },
        "note": "test model <b>not bold</b>",
    }
    model = LoadedModel(build_network("resnet18").eval(), meta)
    cells = synth_cells(40, ctc_fraction=0.3, seed=8, n_samples=2)
    images = [c.channels["BF"] for c in cells]
    # probabilities that make every section non-empty: confident CTCs, FPs and FNs
    rng = np.random.default_rng(0)
    labels = [c.label for c in cells]
    p = np.array(
        [rng.uniform(0.3, 1.0) if lab == "CTC" else rng.uniform(0.0, 0.7) for lab in labels]
    )
    return images, labels, p, model, [c.cell_id for c in cells], [c.sample for c in cells]


def _embedded_pngs(text: str) -> list[np.ndarray]:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L")) for data in found
    ]


def test_report_is_self_contained_and_every_image_shows_something(inputs, tmp_path):
    images, labels, p, model, ids, groups = inputs
    path = write_report(
        tmp_path / "r.html", images, labels, p, model, cell_ids=ids, groups=groups, source="exp"
    )
    text = path.read_text(encoding="utf-8")
    # nothing outside the file: no links to scripts, styles or images elsewhere
    assert not re.search(r'(src|href)="(?!data:)', text)
    for heading in ("Precision-recall", "Counts per sample", "False positives", "False negatives"):
        assert heading in text
    assert "&lt;b&gt;not bold&lt;/b&gt;" in text  # user text is escaped
    pngs = _embedded_pngs(text)
    assert len(pngs) == 6  # PR, calibration, confusion, three montages
    for png in pngs:
        assert min(png.shape) > 50
        assert png.std() > 10  # not a blank image
    # the per-sample table has both samples and the true count
    assert "S01" in text and "S02" in text and "true_ctc" in text


def test_report_counts_say_what_they_are_calibrated_for(inputs, monkeypatch):
    images, labels, p, model, ids, groups = inputs
    text = build_report(images, labels, p, model, cell_ids=ids, groups=groups)
    assert "<th>calibration</th>" in text and "training instrument" in text
    assert "NOT CALIBRATED" not in text

    from napari_deparray_ctc.core.inference import shift

    warning = "These 40 cells look unlike the cells this model was trained on."
    monkeypatch.setattr(shift, "shift_check", lambda images, metadata: {"warning": warning})
    text = build_report(images, labels, p, model, cell_ids=ids, groups=groups)
    assert warning in text
    # both samples' counts are marked, not only the warning above them
    assert text.count("NOT CALIBRATED for this instrument") == 2


def test_report_without_labels_still_renders(inputs):
    images, _, p, model, ids, _ = inputs
    text = build_report(images[:10], [None] * 10, p[:10], model, cell_ids=ids[:10])
    assert "no metrics" in text
    assert len(_embedded_pngs(text)) == 1  # the most confident CTC calls


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_a_headless_browser(inputs, tmp_path):
    images, labels, p, model, ids, groups = inputs
    path = write_report(tmp_path / "r.html", images, labels, p, model, cell_ids=ids, groups=groups)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            path.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert shot.is_file(), "the browser wrote no screenshot"
    page = np.asarray(Image.open(shot).convert("L")).astype(float)
    assert page.shape == (2400, 1200)
    # the page shows the plots: rows with dark ink in the top, middle and lower parts
    inked = (page < 128).mean(axis=1)
    for band in (slice(0, 600), slice(600, 1400), slice(1400, 2400)):
        assert inked[band].max() > 0.02, band
