"""Which cells to label next (``core.suggest``): uncertain, and not near-duplicates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_deparray_ctc.core.inference.suggest import (
    cell_embeddings,
    select_uncertain_diverse,
    suggest_cells,
)
from napari_deparray_ctc.core.model.loaded import LoadedModel, build_ensemble, build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_picks_uncertain_cells_from_different_clusters():
    rng = np.random.default_rng(0)
    # 5 clusters of 30 near-duplicates; cluster 0 is the most uncertain of all, so pure
    # uncertainty sampling would take its 30 copies first
    centres = rng.normal(size=(5, 16)) * 5
    features = np.concatenate([c + 0.01 * rng.normal(size=(30, 16)) for c in centres])
    cluster = np.repeat(np.arange(5), 30)
    others = 0.5 + rng.choice([-1, 1], 150) * rng.uniform(0.05, 0.2, size=150)
    p = np.where(cluster == 0, 0.5, others)
    p[cluster == 0] += rng.uniform(-0.01, 0.01, size=30)
    picked = select_uncertain_diverse(p, features, threshold=0.5, n=5)
    assert len(set(picked)) == 5
    assert sorted(cluster[picked]) == [0, 1, 2, 3, 4]
    # top-5 uncertainty alone: all from cluster 0
    assert set(cluster[np.argsort(np.abs(p - 0.5))[:5]]) == {0}


def test_confident_cells_are_not_picked():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 8))
    p = np.concatenate([rng.uniform(0.45, 0.55, 20), rng.choice([0.001, 0.999], 180)])
    picked = select_uncertain_diverse(p, features, threshold=0.5, n=10)
    assert all(i < 20 for i in picked)
    # the threshold, not 0.5, is what "uncertain" is measured from
    p2 = np.concatenate([np.full(20, 0.5), np.full(180, 0.1)])
    assert all(i >= 20 for i in select_uncertain_diverse(p2, features, threshold=0.1, n=10))


def test_edge_cases():
    assert select_uncertain_diverse([], np.zeros((0, 3)), 0.5, 5) == []
    assert sorted(select_uncertain_diverse([0.2, 0.6], np.eye(2), 0.5, 10)) == [0, 1]


def test_suggest_cells_with_a_model_excludes_labelled_cells():
    torch.manual_seed(0)
    members = [build_network("resnet18").eval() for _ in range(2)]
    model = LoadedModel(
        build_ensemble(members),
        {"arch": "resnet18", "threshold": 0.5, "image_size": 32, "calibration": {"method": "none"}},
    )
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 4000, (32, 32)).astype(np.uint16) for _ in range(30)]
    ids = [f"c{i}" for i in range(30)]
    p, features = cell_embeddings(images, model, batch_size=8)
    assert p.shape == (30,) and features.shape == (30, 2 * 512)
    # the probabilities are those of classify (same pass)
    from napari_deparray_ctc.core.inference.classify import classify

    np.testing.assert_allclose(p, classify(images, model).p_ctc, atol=1e-6)
    chosen = suggest_cells(images, model, n=6, cell_ids=ids, exclude=["c0", "c1", "c2"])
    assert len(chosen) == 6 and len(set(chosen)) == 6
    assert not {"c0", "c1", "c2"} & set(chosen)
    assert suggest_cells(images[:2], model, n=5, cell_ids=ids[:2], exclude=ids[:2]) == []
