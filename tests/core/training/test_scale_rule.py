"""The scale rule holds identically in training and in classification (issue 20).

For every combination of known / unknown pixel size on the training side and on the
classification side, and for a mixed export, the network input of a cell prepared by the
training path (``prepare_tensors`` with the spec training stores in the model) equals,
bit for bit, the input the classification path (``classify``) hands to the network.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_deparray_ctc.core.inference.classify import classify
from napari_deparray_ctc.core.inference.preprocess import (
    DEFAULT_NORMALISATION,
    prepare_batch,
    training_normalisation,
)
from napari_deparray_ctc.core.model.loaded import LoadedModel, build_network
from napari_deparray_ctc.core.training.samples import prepare_tensors
from napari_deparray_ctc.core.training.training_set import TrainingSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32
REQUESTED = 0.55  # TrainConfig.pixel_size_um's default


def _cells(n: int = 6, seed: int = 0) -> list[np.ndarray]:
    """Discs of different sizes in crops of different shapes (16-bit, noisy)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 40 + 6 * i, 44 + 3 * (i % 3)
        yy, xx = np.mgrid[:h, :w]
        disc = np.hypot(yy - h / 2, xx - w / 2) < 8 + i
        out.append((1000 + 2000 * disc + rng.normal(0, 50, disc.shape)).astype(np.uint16))
    return out


def _train_inputs(cells, sizes) -> tuple[torch.Tensor, dict]:
    """The training path: the spec training stores, and the tensors it trains on."""
    ts = TrainingSet(
        bf=cells,
        labels=["CTC", "WBC"] * (len(cells) // 2),
        cell_ids=[f"c{i}" for i in range(len(cells))],
        pixel_sizes=None if all(s is None for s in sizes) else list(sizes),
    )
    spec = training_normalisation(REQUESTED, ts.pixel_sizes, len(cells))
    return prepare_tensors(ts, SIZE, spec, with_dapi=False).bf, spec


def _classify_inputs(cells, spec: dict, sizes) -> torch.Tensor:
    """The classification path: what ``classify`` hands to the network, batch by batch."""
    torch.manual_seed(0)
    model = LoadedModel(
        build_network("resnet18").eval(),
        {"arch": "resnet18", "threshold": 0.5, "image_size": SIZE, "normalisation": spec},
    )
    seen: list[torch.Tensor] = []

    def record(batch, tta=False):
        seen.append(batch.clone())
        return np.zeros(len(batch))

    model.predict_proba = record  # type: ignore[method-assign]
    classify(cells, model, batch_size=4, pixel_size=list(sizes))
    return torch.cat(seen)


def _whole(cells) -> torch.Tensor:
    return prepare_batch(cells, SIZE, DEFAULT_NORMALISATION)


# (training cells' sizes, classified cells' sizes): the same cells on both sides
MATRIX = {
    "unknown at training, unknown at classification": ([None] * 6, [None] * 6),
    "unknown at training, known at classification": ([None] * 6, [0.62] * 6),
    "known at training, known at classification": ([0.55] * 6, [0.55] * 6),
    "known at training, unknown at classification": ([0.55] * 6, [None] * 6),
    "mixed export at training and at classification": ([0.55, None] * 3, [0.55, None] * 3),
}


@pytest.mark.parametrize("case", list(MATRIX))
def test_the_same_cell_reaches_the_network_as_in_training(case):
    train_sizes, classify_sizes = MATRIX[case]
    cells = _cells()
    trained_on, spec = _train_inputs(cells, train_sizes)
    classified = _classify_inputs(cells, spec, classify_sizes)
    assert classified.shape == trained_on.shape == (6, 1, SIZE, SIZE)
    knows_scale = any(s is not None for s in train_sizes)
    assert spec["pixel_size_um"] == (REQUESTED if knows_scale else None)
    for i, (t_size, c_size) in enumerate(zip(train_sizes, classify_sizes, strict=True)):
        if t_size == c_size or not knows_scale:
            # identical declaration on both sides, or a model without a scale: identical input
            torch.testing.assert_close(classified[i], trained_on[i], rtol=0, atol=0)
    if not knows_scale:
        # the model knows no pixel size: every crop is resized whole, whatever it declares
        torch.testing.assert_close(classified, _whole(cells), rtol=0, atol=0)
    if case == "known at training, unknown at classification":
        # the rule resizes the undeclared cells whole, as training did with undeclared cells
        torch.testing.assert_close(classified, _whole(cells), rtol=0, atol=0)
        assert not torch.equal(classified, trained_on)
    if case.startswith("mixed"):
        # in training, the undeclared cells were resized whole, the declared ones rescaled
        whole = _whole(cells)
        for i in (1, 3, 5):
            torch.testing.assert_close(trained_on[i], whole[i], rtol=0, atol=0)
        for i in (0, 2, 4):
            assert not torch.equal(trained_on[i], whole[i])


def test_a_model_with_a_scale_rescales_another_camera_s_cells_as_training_would_have():
    """Known at training (0.55 µm) and at classification (0.42 µm): the training path of the
    same cells declared at 0.42 µm gives the very tensors classification uses."""
    cells = _cells()
    _, spec = _train_inputs(cells, [0.55] * 6)
    as_trained, _ = _train_inputs(cells, [0.42] * 6)  # the same spec: requested 0.55 µm
    classified = _classify_inputs(cells, spec, [0.42] * 6)
    torch.testing.assert_close(classified, as_trained, rtol=0, atol=0)


def test_train_stores_the_spec_its_own_tensors_were_made_with(monkeypatch):
    """End to end through ``train``: a mixed export, then classification of its cells."""
    from napari_deparray_ctc.core.training import samples
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    cells = _cells(8)
    sizes = [0.55, None] * 4
    seen = {}
    real = samples.prepare_tensors

    def spy(ts, image_size, normalisation=None, **kw):
        seen["spec"] = normalisation
        seen["data"] = real(ts, image_size, normalisation, **kw)
        return seen["data"]

    monkeypatch.setattr(samples, "prepare_tensors", spy)
    ts = TrainingSet(
        bf=cells,
        labels=["CTC", "WBC"] * 4,
        cell_ids=[f"c{i}" for i in range(8)],
        pixel_sizes=sizes,
    )
    config = TrainConfig(
        epochs=1,
        image_size=SIZE,
        batch_size=4,
        augment=(),
        folds=2,
        num_threads=1,
        device="cpu",
        pretrained=None,
        min_per_class=2,
    )
    result = train(config, ts)
    stored = result.model.normalisation
    assert stored["pixel_size_um"] == REQUESTED == seen["spec"]["pixel_size_um"]
    assert stored["training_pixel_sizes"] == {"known": 4, "unknown": 4}
    classified = _classify_inputs(cells, stored, sizes)
    torch.testing.assert_close(classified, seen["data"].bf, rtol=0, atol=0)
