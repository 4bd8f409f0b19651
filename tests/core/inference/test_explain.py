"""Saliency maps (``core.explain``): their contract, their maths, and where a trained model looks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_deparray_ctc.core.inference.explain import _integrated_gradients, saliency_maps
from napari_deparray_ctc.core.model.loaded import (
    LoadedModel,
    build_ensemble,
    build_network,
    prepare_batch,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from synth_masks import inside_fraction, synth_cells_with_masks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    torch.manual_seed(0)
    network = build_network("resnet18").eval()
    return LoadedModel(network, {"arch": "resnet18", "threshold": 0.5, "image_size": 32})


def _images(shapes, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(100, 4000, shape).astype(np.uint16) for shape in shapes]


def test_maps_have_the_image_shape_are_non_negative_and_sum_to_one(model):
    shapes = [(32, 32), (40, 28), (20, 50), (64, 64), (1, 30, 30)]
    maps = saliency_maps(_images(shapes), model, steps=4, batch_size=2)
    assert len(maps) == len(shapes)
    for saliency, shape in zip(maps, shapes, strict=True):
        assert saliency.dtype == np.float32
        assert saliency.shape == shape[-2:]
        assert saliency.min() >= 0
        assert saliency.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)


def test_padding_gets_no_saliency_and_the_map_follows_the_image(model):
    # a tall crop is padded left and right: the map is read back onto the crop only, so a
    # map of the crop alone has the crop's shape, and a bright blob moves its map with it
    img = np.full((48, 24), 1000, dtype=np.uint16)
    img[10:20, 8:16] = 3000
    moved = np.full((48, 24), 1000, dtype=np.uint16)
    moved[30:40, 8:16] = 3000
    a, b = saliency_maps([img, moved], model, steps=8)
    assert a.shape == (48, 24)
    assert a[5:25].sum() > 0.5 and b[25:45].sum() > 0.5


def test_integrated_gradients_are_complete(model):
    # completeness: the attributions of the network input add up to
    # logit(input) - logit(blank-field baseline), up to the Riemann error
    x = prepare_batch(_images([(32, 32)] * 3, seed=4), 32)
    with torch.enable_grad():
        attributions = _integrated_gradients(model.network, x, steps=64)
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)
    baseline = border.reshape(3, -1).median(dim=1).values.reshape(3, 1, 1, 1)
    with torch.no_grad():
        gap = (model.network(x) - model.network(baseline.expand_as(x))).reshape(-1)
    total = attributions.sum(dim=(1, 2))
    np.testing.assert_allclose(
        total.numpy(), gap.numpy(), atol=0.05 * float(gap.abs().max()) + 1e-3
    )


def test_ensembles_and_gradcam_work_too():
    torch.manual_seed(1)
    members = [build_network("resnet18").eval() for _ in range(2)]
    model = LoadedModel(
        build_ensemble(members), {"arch": "resnet18", "threshold": 0.5, "image_size": 32}
    )
    images = _images([(32, 32), (30, 36)])
    for method in ("integrated_gradients", "gradcam"):
        maps = saliency_maps(images, model, method=method, steps=2)
        assert [m.shape for m in maps] == [(32, 32), (30, 36)]
        assert all(abs(float(m.sum()) - 1) < 1e-5 for m in maps)


def test_physical_scale_models_map_back_onto_the_image():
    torch.manual_seed(2)
    meta = {
        "arch": "resnet18",
        "threshold": 0.5,
        "image_size": 32,
        "normalisation": {"pixel_size_um": 0.5},
    }
    model = LoadedModel(build_network("resnet18").eval(), meta)
    images = _images([(40, 40), (24, 24)])
    maps = saliency_maps(images, model, steps=2, pixel_sizes=[0.25, 1.0])
    assert [m.shape for m in maps] == [(40, 40), (24, 24)]
    # 40 px at 0.25 um -> 20 px at 0.5 um: all of it seen; 24 px at 1.0 um -> 48 px: the
    # centre 32 px seen, so the outer 4 px of the original get nothing (the resize back
    # spreads the edge of the seen part by about one pixel)
    assert maps[1][:3].sum() == 0 and maps[1][-3:].sum() == 0
    assert maps[1][:, :3].sum() == 0 and maps[1][:, -3:].sum() == 0
    assert abs(float(maps[1].sum()) - 1) < 1e-5


def test_bad_arguments_are_refused(model):
    with pytest.raises(ValueError, match="method"):
        saliency_maps(_images([(32, 32)]), model, method="magic")
    with pytest.raises(ValueError, match="steps"):
        saliency_maps(_images([(32, 32)]), model, steps=0)
    with pytest.raises(ValueError, match="image 0"):
        saliency_maps([np.zeros((2, 3, 4))], model)


@pytest.mark.slow
def test_a_trained_models_saliency_falls_on_the_cell(tmp_path):
    """Train a small model on synthetic cells; most of each map lies on the cell, not around it."""
    from scipy import ndimage as ndi

    from napari_deparray_ctc.core.synth import synth_cells
    from napari_deparray_ctc.core.training.train import TrainConfig, train
    from napari_deparray_ctc.core.training.training_set import TrainingSet

    cells = synth_cells(240, ctc_fraction=0.3, seed=21, n_samples=3)
    data = TrainingSet(
        bf=[c.channels["BF"] for c in cells],
        labels=[c.label for c in cells],
        groups=[c.sample for c in cells],
    )
    config = TrainConfig(epochs=6, folds=1, ensemble=False, num_threads=1, seed=0)
    trained = train(config, data=data).model
    test, masks = synth_cells_with_masks(40, ctc_fraction=0.3, seed=77)
    maps = saliency_maps([c.channels["BF"] for c in test], trained, steps=8)
    inside = np.mean([inside_fraction(s, m) for s, m in zip(maps, masks, strict=True)])
    rim = np.mean(
        [
            inside_fraction(s, ndi.binary_dilation(m, iterations=2))
            for s, m in zip(maps, masks, strict=True)
        ]
    )
    area = np.mean([m.mean() for m in masks])
    # the cell covers ~10 % of the crop; with its bright-field rim (2 px) most of the map
    assert inside > 3 * area
    assert rim > 0.5
