"""Training sets: validation before work, leak-free splits, DAPI strategies, loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_deparray_ctc.core.errors import TrainingDataError
from napari_deparray_ctc.core.training import (
    BLEND_ALPHA_RANGE,
    SampleBank,
    TrainingSet,
    check_training_set,
    kfold_splits,
    load_training_set,
    prepare_tensors,
    split_train_val,
    training_set_from_cells,
)


def _toy(n: int = 12, n_ctc: int | None = None, size: int = 16, seed: int = 0, dapi: bool = True):
    rng = np.random.default_rng(seed)
    n_ctc = n // 2 if n_ctc is None else n_ctc
    labels = ["CTC"] * n_ctc + ["WBC"] * (n - n_ctc)
    bf = [rng.integers(0, 4096, (size, size)).astype(np.uint16) for _ in range(n)]
    dp = [rng.integers(0, 4096, (size, size)).astype(np.uint16) for _ in range(n)] if dapi else None
    return TrainingSet(bf=bf, labels=labels, dapi=dp, cell_ids=[f"c{i}" for i in range(n)])


# --------------------------------------------------------------------------- validation
def test_valid_set_passes_and_unlabelled_cells_are_dropped_with_a_count():
    ts = _toy(12)
    ts.labels[0] = None
    ts.labels[1] = "tumour"  # alias -> CTC
    ts.labels[-1] = ""  # unknown -> dropped
    with pytest.warns(UserWarning, match="2 unlabelled cell"):
        clean = check_training_set(ts)
    assert len(clean) == 10
    assert clean.labels[0] == "CTC"
    assert clean.cell_ids == [f"c{i}" for i in range(1, 11)]
    assert len(clean.dapi) == 10


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrainingSet(bf=[], labels=[]), "empty"),
        (lambda: _toy(12, n_ctc=0), "only one class: all 12 labelled cells are WBC"),
        (lambda: _toy(12, n_ctc=12), "only one class: all 12 labelled cells are CTC"),
        (lambda: _toy(6), "too few labelled cells: 6"),
        (lambda: _toy(12, n_ctc=1), "too few CTC cells: 1"),
        (
            lambda: TrainingSet(bf=_toy(10).bf, labels=_toy(10).labels, dapi=_toy(9).dapi),
            "10 bright-field images but 9 DAPI",
        ),
        (lambda: TrainingSet(bf=_toy(10).bf, labels=_toy(9).labels), "but 9 labels"),
        (lambda: TrainingSet(bf=[np.ones((4, 4))] * 10, labels=["CTC", "WBC"] * 5), "identical"),
        (lambda: TrainingSet(bf=[np.ones((4, 4, 3))] * 10, labels=["CTC", "WBC"] * 5), "not 2-D"),
        (lambda: TrainingSet(bf=_toy(10).bf, labels=["CTC", "maybe"] * 5), "unknown class name"),
        (
            lambda: TrainingSet(bf=_toy(10).bf, labels=[None] * 10),
            "none of the 10 cells is labelled",
        ),
    ],
)
def test_bad_sets_raise_before_any_work(make, message):
    with pytest.raises(TrainingDataError, match=message):
        check_training_set(make())


def test_nan_images_are_named():
    ts = _toy(12)
    ts.bf = [b.astype(np.float32) for b in ts.bf]
    ts.bf[3][0, 0] = np.nan
    ts.bf[7][1, 1] = np.inf
    with pytest.raises(TrainingDataError, match="NaN or infinite pixels: c3, c7"):
        check_training_set(ts)
    ts = _toy(12)
    ts.dapi[5] = np.full((16, 16), np.nan)
    with pytest.raises(TrainingDataError, match=r"DAPI image.*c5"):
        check_training_set(ts)


# --------------------------------------------------------------------------- splits
def test_stratified_split_has_both_classes_on_both_sides():
    labels = ["CTC"] * 5 + ["WBC"] * 45  # 10 % CTC, as in real data
    train, val = split_train_val(labels, val_fraction=0.2, seed=3)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(50))
    assert len(val) == 10
    y = np.asarray(labels)
    assert set(y[train]) == {"CTC", "WBC"} and set(y[val]) == {"CTC", "WBC"}
    again = split_train_val(labels, val_fraction=0.2, seed=3)
    assert np.array_equal(again[1], val)


@pytest.mark.parametrize("seed", range(8))
def test_group_split_never_leaks_a_sample(seed):
    rng = np.random.default_rng(seed)
    n = 60
    groups = [f"P{g}" for g in rng.integers(0, 7, n)]
    groups[5] = None  # a cell without a group is its own group
    labels = ["CTC" if v else "WBC" for v in rng.uniform(size=n) < 0.3]
    labels[:2] = ["CTC", "CTC"]
    train, val = split_train_val(labels, groups, val_fraction=0.25, seed=seed)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))
    train_groups = {groups[i] for i in train if groups[i] is not None}
    val_groups = {groups[i] for i in val if groups[i] is not None}
    assert not train_groups & val_groups
    assert {labels[i] for i in train} == {"CTC", "WBC"}


def test_group_kfold_puts_each_group_in_exactly_one_test_fold():
    rng = np.random.default_rng(0)
    groups = [f"S{i // 6}" for i in range(48)]  # 8 samples of 6 cells
    labels = ["CTC" if rng.uniform() < 0.4 else "WBC" for _ in range(48)]
    folds = kfold_splits(labels, groups, k=4, seed=0)
    assert len(folds) == 4
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(48))
    for train, test in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in test}


def test_kfold_without_groups_and_its_errors():
    labels = ["CTC"] * 6 + ["WBC"] * 14
    folds = kfold_splits(labels, None, k=3, seed=1)
    for train, test in folds:
        assert {labels[i] for i in test} == {"CTC", "WBC"}
        assert not set(train) & set(test)
    with pytest.raises(TrainingDataError, match="at least 7 CTC cells; there are 6"):
        kfold_splits(labels, None, k=7)
    with pytest.raises(TrainingDataError, match="at least 3 sample groups; there are 2"):
        kfold_splits(labels, ["A"] * 10 + ["B"] * 10, k=3)


def test_single_group_falls_back_to_cell_split_with_warning():
    labels = ["CTC"] * 4 + ["WBC"] * 8
    with pytest.warns(UserWarning, match="one sample/group"):
        train, val = split_train_val(labels, ["S1"] * 12, val_fraction=0.25)
    assert len(val) == 3 and len(train) == 9


# --------------------------------------------------------------------------- DAPI strategies
def test_prepare_tensors_and_strategies():
    ts = check_training_set(_toy(10))
    ts.dapi[2] = None  # one cell without DAPI
    data = prepare_tensors(ts, image_size=16)
    assert data.bf.shape == (10, 1, 16, 16) and data.dapi.shape == (10, 1, 16, 16)
    assert data.has_dapi.tolist() == [i != 2 for i in range(10)]
    assert data.y.tolist() == [1.0] * 5 + [0.0] * 5

    none = SampleBank(data, "none")
    assert len(none) == 10
    x, y, nucleus = none.batch(torch.arange(10))
    torch.testing.assert_close(x, data.bf)
    assert nucleus is None

    sub = SampleBank(data, "substitute")
    assert len(sub) == 19  # 10 BF + 9 DAPI samples
    assert sub.labels.tolist() == data.y.tolist() + [data.y[i].item() for i in range(10) if i != 2]
    x, y, _ = sub.batch(torch.arange(10, 19))
    cells = [i for i in range(10) if i != 2]
    torch.testing.assert_close(x, data.dapi[cells])
    torch.testing.assert_close(y, data.y[cells])

    torch.manual_seed(0)
    blend = SampleBank(data, "blend")
    x, y, _ = blend.batch(torch.arange(10, 19))
    bf, dapi = data.bf[cells], data.dapi[cells]
    # each extra sample is alpha * BF + (1 - alpha) * DAPI with alpha in the blend range
    diff = (bf - dapi).flatten(1)
    alpha = ((x - dapi).flatten(1) * diff).sum(1) / (diff * diff).sum(1)
    assert torch.all(alpha >= BLEND_ALPHA_RANGE[0] - 1e-5) and torch.all(alpha <= 1 + 1e-5)
    recon = alpha.view(-1, 1, 1, 1) * bf + (1 - alpha.view(-1, 1, 1, 1)) * dapi
    torch.testing.assert_close(x, recon, atol=1e-5, rtol=0)
    torch.testing.assert_close(y, data.y[cells])

    aux = SampleBank(data, "aux_nucleus")
    assert len(aux) == 10
    x, y, nucleus = aux.batch(torch.arange(10))
    torch.testing.assert_close(x, data.bf)
    assert torch.isnan(nucleus[2]).all() and not torch.isnan(nucleus[3]).any()


def test_strategy_without_dapi_falls_back_and_unknown_strategy_fails():
    data = prepare_tensors(check_training_set(_toy(10, dapi=False)), image_size=16)
    with pytest.warns(UserWarning, match="no cell has a DAPI image"):
        bank = SampleBank(data, "substitute")
    assert bank.strategy == "none" and len(bank) == 10
    with pytest.raises(ValueError, match="unknown DAPI strategy 'mixup'"):
        SampleBank(data, "mixup")


# --------------------------------------------------------------------------- loading
def test_load_training_set_from_a_synthetic_export(tmp_path):
    pytest.importorskip("napari_deparray_ctc.core.io")
    from napari_deparray_ctc.core.synth import write_export

    export = write_export(
        tmp_path / "export", 12, ctc_fraction=0.5, seed=0, image_size=24, n_samples=3
    )
    ts = load_training_set(export)
    assert len(ts) == 12
    assert sorted(set(ts.labels)) == ["CTC", "WBC"]
    assert ts.groups is not None and set(ts.groups) == {"S01", "S02", "S03"}
    assert ts.dapi is not None and all(d.shape == (24, 24) for d in ts.dapi)
    assert all(b.ndim == 2 for b in ts.bf)
    assert ts.paths is not None and len(ts.paths) == 12
    summary = ts.summary()
    assert summary["n_cells"] == 12 and summary["n_ctc"] == 6 and summary["n_groups"] == 3
    assert math.isfinite(float(np.mean(ts.bf[0])))


def test_load_training_set_with_nothing_readable(tmp_path):
    pytest.importorskip("napari_deparray_ctc.core.io")
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=str(tmp_path.name)):
        load_training_set(tmp_path)


# --------------------------------------------------------------------------- the one assembler
def test_training_set_from_cells_skips_cells_without_bf_and_blank_dapi():
    from napari_deparray_ctc.core.io import Cell

    rng = np.random.default_rng(0)

    def plane():
        return rng.integers(0, 4096, (16, 16)).astype(np.uint16)

    cells = [
        Cell("a", {"BF": plane(), "DAPI": plane()}, "/x/a.tif", "CTC", "S1", 0.5),
        Cell("b", {"DAPI": plane()}, "/x/b.tif", "WBC", "S1", 0.5),  # no BF
        Cell("c", {"BF": plane(), "DAPI": np.full((16, 16), 7, np.uint16)}, "/x/c.tif", "WBC"),
        Cell("d", {"BF": plane()}, "/x/d.tif", None, "S2"),
    ]
    skipped: list[tuple[str, str]] = []
    ts = training_set_from_cells(iter(cells), on_skip=lambda p, r: skipped.append((p, r)))
    assert ts.cell_ids == ["a", "c", "d"] and ts.labels == ["CTC", "WBC", None]
    assert skipped == [("/x/b.tif", "no bright-field (BF) image, so it cannot be used")]
    assert ts.dapi[0] is not None and ts.dapi[1] is None and ts.dapi[2] is None  # blank = missing
    assert ts.groups == ["S1", None, "S2"] and ts.paths == ["/x/a.tif", "/x/c.tif", "/x/d.tif"]
    assert ts.pixel_sizes == [0.5, None, None]
    with pytest.warns(UserWarning, match="1 cell\\(s\\) without a bright-field .* b"):
        training_set_from_cells(cells)
    with pytest.raises(TrainingDataError, match="no cell with a bright-field image"):
        training_set_from_cells([cells[1]])
    only_blank = training_set_from_cells([cells[2]])
    assert only_blank.dapi is None and only_blank.groups is None and only_blank.pixel_sizes is None


def test_load_training_set_names_the_cells_left_out(tmp_path):
    from napari_deparray_ctc.core.synth import write_export

    export = write_export(tmp_path / "e", 10, ctc_fraction=0.5, seed=0, image_size=24)
    ts = load_training_set(export)
    assert ts.pixel_sizes is not None and all(s == pytest.approx(0.55) for s in ts.pixel_sizes)
