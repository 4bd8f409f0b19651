"""Training: learning, determinism, cancel, threshold storage, early stopping, errors, CV."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_deparray_ctc.core import train as train_module
from napari_deparray_ctc.core.classify import classify
from napari_deparray_ctc.core.data import TrainingSet
from napari_deparray_ctc.core.model import load_model
from napari_deparray_ctc.core.train import (
    TrainConfig,
    TrainingDataError,
    TrainProgress,
    cross_validate,
    train,
)

SIZE = 32


def toy_set(
    n: int = 24, seed: int = 0, groups: int | None = None, dapi: bool = False
) -> TrainingSet:
    """Learnable toy cells: CTC = bright filled disc, WBC = thin ring (16-bit, noisy)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    bf, labels, nuclei = [], [], []
    for i in range(n):
        is_ctc = i % 2 == 0
        cy, cx = SIZE / 2 + rng.normal(0, 1.5, 2)
        r = np.hypot(yy - cy, xx - cx)
        radius = rng.uniform(0.25, 0.32) * SIZE
        shape = r < radius if is_ctc else (r < radius) & (r > radius - 3)
        bf.append((1000 + 2000 * shape + rng.normal(0, 100, shape.shape)).astype(np.uint16))
        nuclei.append(
            (200 + 3000 * (r < radius / 2) + rng.normal(0, 20, shape.shape)).astype(np.uint16)
        )
        labels.append("CTC" if is_ctc else "WBC")
    return TrainingSet(
        bf=bf,
        labels=labels,
        dapi=nuclei if dapi else None,
        cell_ids=[f"t{i:03d}" for i in range(n)],
        groups=None if groups is None else [f"S{(i // 2) % groups}" for i in range(n)],
    )


def fast_config(**changes) -> TrainConfig:
    base = TrainConfig(
        arch="resnet18",
        epochs=2,
        image_size=SIZE,
        batch_size=8,
        augment=(),
        dapi_strategy="none",
        num_threads=1,
        device="cpu",
    )
    return dataclasses.replace(base, **changes)


def test_defaults_are_complete_and_valid():
    config = TrainConfig()
    checked = config.validated()
    assert checked.arch in ("resnet18", "resnet34", "resnet50")
    assert checked.augment == ("geometric", "photometric", "noise")
    assert checked.dapi_strategy in ("none", "substitute", "blend", "aux_nucleus")
    assert TrainConfig.from_dict(config.to_dict()) == config
    for bad in (
        {"arch": "vgg"},
        {"epochs": 0},
        {"image_size": 8},
        {"val_fraction": 1.0},
        {"augment": ("blur",)},
        {"dapi_strategy": "mix"},
        {"lr": 0.0},
        {"batch_size": 1},
    ):
        with pytest.raises(
            ValueError, match=next(iter(bad)) if "augment" not in bad else "augmentation"
        ):
            dataclasses.replace(config, **bad).validated()


def test_loss_falls_on_a_learnable_toy_set():
    result = train(fast_config(epochs=4), toy_set())
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 4
    assert losses[-1] < 0.6 * losses[0], losses
    assert result.metrics["f1"] >= 0.8
    assert not result.cancelled
    assert result.model.network.training is False


def test_same_seed_same_model_different_seed_different_model():
    data = toy_set(16)
    config = fast_config(epochs=1, augment=("geometric", "noise"))
    a = train(config, data)
    b = train(config, data)
    c = train(dataclasses.replace(config, seed=1), data)
    state_a, state_b, state_c = (r.model.network.state_dict() for r in (a, b, c))
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert any(
        not torch.equal(state_a[k], state_c[k]) for k in state_a if state_a[k].is_floating_point()
    )
    images = data.bf[:6]
    np.testing.assert_array_equal(classify(images, a.model).p_ctc, classify(images, b.model).p_ctc)
    assert a.model.threshold == b.model.threshold


def test_rng_threads_and_determinism_flag_are_restored():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    flag = torch.are_deterministic_algorithms_enabled()
    train(fast_config(epochs=1, num_threads=1), toy_set(12))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == flag


def test_threshold_is_chosen_on_validation_stored_and_used(tmp_path):
    out = tmp_path / "model.pt"
    data = toy_set(24, groups=6)
    result = train(fast_config(epochs=2, out=str(out)), data)
    assert result.out_path == str(out)
    threshold = result.model.threshold
    best = max(result.history, key=lambda h: h["val_f1"])
    assert result.metrics["threshold"] == threshold
    assert result.metrics["f1"] == pytest.approx(best["val_f1"])
    loaded = load_model(out, device="cpu")
    assert loaded.threshold == threshold
    meta = loaded.metadata
    assert meta["train_config"]["epochs"] == 2
    assert meta["seed"] == 0
    assert meta["data_summary"]["split"] == "group"
    val_groups = set(meta["data_summary"]["val_groups"])
    assert val_groups and val_groups < {f"S{g}" for g in range(6)}
    assert meta["metrics"]["final"] is True
    predictions = classify(data.bf, loaded)
    assert predictions.threshold == threshold
    assert predictions.labels == ["CTC" if p >= threshold else "WBC" for p in predictions.p_ctc]
    np.testing.assert_allclose(classify(data.bf, result.model).p_ctc, predictions.p_ctc, atol=1e-6)


def test_progress_reports_batches_epochs_and_done():
    events: list[TrainProgress] = []
    result = train(fast_config(epochs=2), toy_set(16), progress=events.append)
    phases = [e.phase for e in events]
    assert phases[-1] == "done"
    assert phases.count("epoch_end") == len(result.history) == 2
    batches = [e for e in events if e.phase == "batch"]
    assert len(batches) == 2 * batches[0].batches
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in batches)
    assert batches[-1].eta_s == pytest.approx(0.0, abs=1e-9)
    assert all(e.elapsed_s >= 0 for e in events)
    assert events[-1].best_f1 == result.metrics["f1"]


def test_should_stop_cancels_within_one_batch_and_returns_a_usable_model(tmp_path):
    out = tmp_path / "model.pt"
    calls = 0

    def stop_on_third_call():
        nonlocal calls
        calls += 1
        return calls >= 3

    events: list[TrainProgress] = []
    data = toy_set(24)
    result = train(
        fast_config(epochs=5, out=str(out)),
        data,
        progress=events.append,
        should_stop=stop_on_third_call,
    )
    assert result.cancelled and not result.stopped_early
    assert sum(e.phase == "batch" for e in events) == 2  # stopped before the third batch
    assert len(result.history) == 1  # the partial epoch was evaluated
    assert 0.0 <= result.model.threshold <= 1.0
    predictions = classify(data.bf, result.model)
    assert len(predictions) == 24 and np.isfinite(predictions.p_ctc).all()
    assert load_model(out).threshold == result.model.threshold  # complete file written


def test_cancel_before_the_first_batch_still_gives_a_model():
    result = train(fast_config(epochs=3), toy_set(12), should_stop=lambda: True)
    assert result.cancelled
    assert len(result.history) == 1 and result.history[0]["train_loss"] is None
    assert len(classify(toy_set(12).bf, result.model)) == 12


def test_cancel_after_an_epoch_keeps_the_best_epoch():
    calls = 0

    def stop_in_epoch_two():
        nonlocal calls
        calls += 1
        return calls > 3  # 16 cells -> 13 training samples -> 2 batches per epoch

    result = train(fast_config(epochs=4), toy_set(16), should_stop=stop_in_epoch_two)
    assert result.cancelled
    assert [h["epoch"] for h in result.history] == [1]
    assert result.metrics["best_epoch"] == 1


def test_early_stopping_on_a_plateau(monkeypatch):
    # A validation score that never improves after epoch 1 must stop after `patience` epochs.
    monkeypatch.setattr(train_module, "_weighted_bce", lambda *a: 1.0)
    monkeypatch.setattr("napari_deparray_ctc.core.metrics.best_threshold", lambda y, p: (0.5, 0.5))
    result = train(fast_config(epochs=10, patience=2), toy_set(12))
    assert result.stopped_early and not result.cancelled
    assert len(result.history) == 3
    assert result.metrics["best_epoch"] == 1


def test_aux_nucleus_head_is_training_only(tmp_path):
    out = tmp_path / "aux.pt"
    result = train(
        fast_config(epochs=1, dapi_strategy="aux_nucleus", out=str(out)), toy_set(16, dapi=True)
    )
    network = result.model.network
    assert not network.layer2._forward_hooks  # hook removed
    assert set(network.state_dict()) == set(load_model(out).network.state_dict())
    assert load_model(out).metadata["dapi_strategy"] == "aux_nucleus"


@pytest.mark.parametrize("strategy", ["substitute", "blend"])
def test_dapi_strategies_add_samples_and_train(strategy):
    data = toy_set(16, dapi=True)
    result = train(fast_config(epochs=1, dapi_strategy=strategy, augment=("photometric",)), data)
    summary = result.model.metadata["data_summary"]
    assert summary["n_train_samples"] == 2 * summary["n_train"]
    assert result.model.metadata["dapi_strategy"] == strategy


def test_bad_data_fails_before_any_work(tmp_path):
    called = []
    out = tmp_path / "model.pt"
    out.write_bytes(b"the user's previous model")
    single = toy_set(12)
    single.labels = ["CTC"] * 12
    for data, message in (
        (TrainingSet(bf=[], labels=[]), "empty"),
        (single, "only one class"),
    ):
        with pytest.raises(TrainingDataError, match=message):
            train(fast_config(out=str(out)), data, progress=called.append)
    with pytest.raises(TrainingDataError, match="no training data"):
        train(fast_config(), None)
    with pytest.raises(ValueError, match="does not exist"):
        train(fast_config(out=str(tmp_path / "missing" / "m.pt")), toy_set(12))
    assert called == []
    assert out.read_bytes() == b"the user's previous model"


def test_cross_validation_reports_mean_and_sd():
    data = toy_set(16, groups=4)
    events: list[TrainProgress] = []
    report = cross_validate(fast_config(epochs=1), data, k=2, progress=events.append)
    assert report["k"] == 2 and len(report["folds"]) == 2
    assert sum(f["n_test"] for f in report["folds"]) == 16
    for key in ("precision", "recall", "f1"):
        assert 0.0 <= report["mean"][key] <= 1.0
        assert report["sd"][key] >= 0.0
        assert "±" in report["summary"][key]
    assert {e.fold for e in events} == {1, 2} and {e.folds for e in events} == {2}
    assert not report["cancelled"]
