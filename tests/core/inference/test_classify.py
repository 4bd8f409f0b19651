"""Streaming classification: bounded memory, stored threshold used, cancel, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_deparray_ctc.core.inference.classify import Predictions, classify, evaluate
from napari_deparray_ctc.core.model.loaded import (
    LoadedModel,
    build_network,
    prepare_batch,
    save_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    torch.manual_seed(0)
    network = build_network("resnet18").eval()
    return LoadedModel(network, {"arch": "resnet18", "threshold": 0.5, "image_size": 24})


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4096, (20 + i % 7, 24)).astype(np.uint16) for i in range(n)]


def test_predictions_match_a_direct_forward_pass(model):
    images = _images(10)
    result = classify(images, model, batch_size=4)
    assert isinstance(result, Predictions)
    assert len(result) == 10 and result.p_ctc.shape == (10,)
    with torch.no_grad():
        direct = torch.sigmoid(model.network(prepare_batch(images, 24))).numpy().ravel()
    np.testing.assert_allclose(result.p_ctc, direct, rtol=0, atol=1e-5)
    assert result.cell_ids == [f"cell-{i:05d}" for i in range(10)]
    assert not result.cancelled


def test_stream_from_a_generator_keeps_memory_bounded(model):
    images = _images(23)
    produced = 0
    peaks = []

    def generate():
        nonlocal produced
        for img in images:
            produced += 1
            yield img

    def progress(done, total):
        assert total is None  # a generator has no length
        peaks.append(produced - done)

    streamed = classify(generate(), model, batch_size=5, progress=progress)
    # never more than one batch read ahead of what has been classified
    assert max(peaks) <= 5
    assert len(peaks) == 5  # 4 full batches + the tail
    listed = classify(images, model, batch_size=64)
    np.testing.assert_allclose(streamed.p_ctc, listed.p_ctc, rtol=0, atol=1e-5)


def test_stack_input_and_cell_ids(model):
    stack = np.stack([img[:20] for img in _images(6)])
    ids = [f"id{i}" for i in range(6)]
    result = classify(stack, model, batch_size=4, cell_ids=ids)
    assert result.cell_ids == ids
    records = result.as_records()
    assert records[0] == {"cell_id": "id0", "p_ctc": result.p_ctc[0], "label": result.labels[0]}
    with pytest.raises(ValueError, match="5 cell ids given for 6 images"):
        classify(stack, model, cell_ids=ids[:5])


def test_stored_threshold_is_used(model, tmp_path):
    images = _images(12)
    p = classify(images, model).p_ctc
    threshold = float(np.median(p))  # half the cells on each side
    path = tmp_path / "model.pt"
    save_model(path, model.network, {**model.metadata, "threshold": threshold})
    result = classify(images, path, device="cpu")
    assert result.threshold == pytest.approx(threshold)
    # the model file stores float16 weights (half the size): probabilities agree to 1e-3
    np.testing.assert_allclose(result.p_ctc, p, rtol=0, atol=1e-3)
    expected = ["CTC" if v >= threshold else "WBC" for v in result.p_ctc]
    assert result.labels == expected
    assert 0 < expected.count("CTC") < 12
    assert result.relabel(0.0) == ["CTC"] * 12
    assert result.relabel(1.01) == ["WBC"] * 12


def test_cancel_returns_partial_results(model):
    calls = 0

    def stop_after_two_batches():
        nonlocal calls
        calls += 1
        return calls > 2

    result = classify(_images(20), model, batch_size=4, should_stop=stop_after_two_batches)
    assert result.cancelled
    assert len(result.p_ctc) == 8 and len(result.cell_ids) == 8


def test_bad_inputs(model):
    images = _images(5)
    images[3] = np.ones((2, 8, 8))
    with pytest.raises(ValueError, match=r"image 3 has shape \(2, 8, 8\)"):
        classify(images, model, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        classify(_images(2), model, batch_size=0)
    with pytest.raises(TypeError, match="LoadedModel or a path"):
        classify(_images(2), object())
    empty = classify([], model)
    assert len(empty) == 0 and empty.labels == []


def test_evaluate_reports_metrics(model):
    images = _images(10)
    labels = ["CTC", "WBC"] * 5
    result = evaluate(images, labels, model)
    assert result["n_cells"] == 10 and result["n_ctc"] == 5
    assert result["model_threshold"] == 0.5
    assert 0.0 <= result["f1"] <= 1.0
    assert result["best_f1"] >= result["f1"]


def test_adapt_re_estimates_batchnorm_without_changing_the_model(model):
    images = _images(12)
    before = classify(images, model).p_ctc
    state = {k: v.clone() for k, v in model.network.state_dict().items()}
    adapted = classify(images, model, batch_size=4, adapt=True, adapt_cells=8)
    assert len(adapted) == 12 and np.isfinite(adapted.p_ctc).all()
    assert not np.allclose(adapted.p_ctc, before)  # other statistics, other scores
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, state[key]), key  # the given model is untouched
    np.testing.assert_allclose(classify(images, model).p_ctc, before)


def test_tta_averages_the_eight_views(model):
    image = _images(1)[0][:20, :20]
    views = [np.rot90(image, k) for k in range(4)]
    views += [np.fliplr(v) for v in views]
    p = classify(views, model, tta=True).p_ctc
    np.testing.assert_allclose(p, p[0], atol=1e-5)  # the same cell in every view: one score


def test_pixel_size_is_used_by_a_model_trained_at_a_canonical_scale(model):
    scaled = LoadedModel(
        model.network,
        {**model.metadata, "normalisation": {"pixel_size_um": 0.5}},
    )
    images = _images(4)
    same = classify(images, scaled, pixel_size=0.5).p_ctc
    other = classify(images, scaled, pixel_size=0.25).p_ctc
    per_image = classify(images, scaled, pixel_size=[0.5, 0.25, None, 0.5]).p_ctc
    assert not np.allclose(same, other)
    np.testing.assert_allclose(per_image[[0, 3]], same[[0, 3]], atol=1e-6)
    np.testing.assert_allclose(per_image[1], other[1], atol=1e-6)
