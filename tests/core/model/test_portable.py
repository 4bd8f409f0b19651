"""ONNX export (``core.portable``): onnxruntime gives torch's calibrated P(CTC) within 1e-4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from napari_deparray_ctc.core.errors import DeparrayError
from napari_deparray_ctc.core.model.loaded import (
    build_ensemble,
    build_network,
    load_model,
    prepare_batch,
    save_model,
)
from napari_deparray_ctc.core.model.portable import (
    export_onnx,
    onnx_metadata,
    onnx_predict_proba,
)
from napari_deparray_ctc.core.synth import synth_cells


def _calibration(method: str, logits: np.ndarray) -> dict:
    if method == "platt":
        return {"method": "platt", "a": 0.7, "b": -0.4, "n_cells": 50}
    # breakpoints inside the range of the logits: cells fall on every segment and beyond
    x = np.quantile(logits, [0.1, 0.3, 0.5, 0.7, 0.9])
    return {"method": "isotonic", "x": list(x), "y": [0.02, 0.1, 0.3, 0.6, 0.97], "n_cells": 50}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cells():
    return [c.channels["BF"] for c in synth_cells(24, ctc_fraction=0.3, seed=12)]


@pytest.mark.parametrize("calibration", ["platt", "isotonic"])
def test_onnxruntime_and_torch_give_the_same_p_ctc(calibration, cells, tmp_path):
    torch.manual_seed(3)
    members = [build_network("resnet18") for _ in range(2)]
    for m in members:  # non-trivial BatchNorm statistics, as after training
        with torch.no_grad():
            m.train()(torch.rand(8, 1, 32, 32))
    network = build_ensemble(members).eval()
    path = tmp_path / "m.pt"
    meta = {"arch": "resnet18", "threshold": 0.42, "image_size": 32}
    save_model(path, network, meta)
    model = load_model(path, device="cpu")
    batch = prepare_batch(cells, model.image_size, model.normalisation)
    spec = _calibration(calibration, model.predict_logits(batch))
    save_model(path, model, {"calibration": spec})
    model = load_model(path, device="cpu")
    onnx_path = export_onnx(path, tmp_path / "m.onnx")
    assert onnx_path.is_file() and not (tmp_path / "m.onnx.data").exists()  # one file
    p_torch = model.predict_proba(batch)
    p_onnx = onnx_predict_proba(onnx_path, batch.numpy())
    assert p_onnx.shape == (len(cells),)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4, rtol=0)
    assert p_torch.std() > 0  # the cells really differ
    stored = onnx_metadata(onnx_path)
    assert stored["threshold"] == pytest.approx(0.42)
    assert stored["calibration"]["method"] == calibration


def test_export_errors_are_one_clear_message(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    with pytest.raises(DeparrayError) as info:
        export_onnx(bad, tmp_path / "x.onnx")
    assert str(bad) in str(info.value)
    with pytest.raises(DeparrayError, match="does not exist"):
        export_onnx(bad, tmp_path / "missing" / "x.onnx")
