"""Training: cross-fitting, selection, calibration, the learned check, cancel, errors, CV."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_deparray_ctc.core.inference.classify import classify
from napari_deparray_ctc.core.model.loaded import load_model, prepare_batch
from napari_deparray_ctc.core.training import TrainingSet
from napari_deparray_ctc.core.training import fit as fit_module
from napari_deparray_ctc.core.training.train import (
    TrainConfig,
    TrainingDataError,
    TrainProgress,
    config_field_defaults,
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
        folds=2,
        num_threads=1,
        device="cpu",
        pretrained=None,  # random weights: quick, and what these tests are about
        lr=1e-3,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def learned_result(tmp_path_factory):
    """One training on the learnable toy set, written to a file (shared by several tests)."""
    out = tmp_path_factory.mktemp("trained") / "model.pt"
    events: list[TrainProgress] = []
    result = train(fast_config(epochs=4, out=str(out)), toy_set(24, groups=6), events.append)
    return result, out, events


def test_defaults_are_complete_and_valid():
    config = TrainConfig()
    checked = config.validated()
    assert checked.arch in ("resnet18", "resnet34", "resnet50")
    assert set(checked.augment) <= {"geometric", "photometric", "noise"}
    assert checked.dapi_strategy in ("none", "substitute", "blend", "aux_nucleus")
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config_field_defaults() == config.to_dict()
    for bad in (
        {"arch": "vgg"},
        {"epochs": 0},
        {"image_size": 8},
        {"val_fraction": 1.0},
        {"augment": ("blur",)},
        {"dapi_strategy": "mix"},
        {"lr": 0.0},
        {"batch_size": 1},
        {"folds": 0},
        {"calibration": "magic"},
        {"threshold_rule": "mean"},
        {"pixel_size_um": -1.0},
    ):
        with pytest.raises(
            ValueError, match=next(iter(bad)) if "augment" not in bad else "augmentation"
        ):
            dataclasses.replace(config, **bad).validated()


def test_every_field_carries_help_and_numeric_fields_a_range():
    specs = TrainConfig.field_specs()
    assert set(specs) == set(config_field_defaults())
    for name, spec in specs.items():
        assert spec["help"].strip().endswith("."), name
        assert spec["default"] == config_field_defaults()[name]
    for name in ("epochs", "image_size", "batch_size", "folds", "seed", "patience"):
        assert specs[name]["min"] <= specs[name]["default"] <= specs[name]["max"], name
        assert specs[name]["step"] >= 1
    assert specs["image_size"]["min"] == 16 and specs["image_size"]["max"] == 1024
    assert specs["dapi_strategy"]["choices"] == ("none", "substitute", "blend", "aux_nucleus")
    for strategy in ("none", "substitute", "blend", "aux_nucleus"):
        assert f"{strategy}:" in specs["dapi_strategy"]["help"]  # one sentence each


def test_a_learnable_set_is_learned_and_every_cell_is_scored_out_of_fold(learned_result):
    result, _, _ = learned_result
    assert result.learned and result.warning is None
    assert result.metrics["f1"] >= 0.8 and result.metrics["roc_auc"] >= 0.9
    assert result.metrics["split"] == "out-of-fold"
    assert result.metrics["n_val"] == {"CTC": 12, "WBC": 12}  # every labelled cell held out once
    assert len(result.oof["logits"]) == 24 and sorted(set(result.oof["fold"])) == [1, 2]
    assert {h["fold"] for h in result.history} == {1, 2}
    assert result.model.network.training is False
    assert len(result.model.network.members) == 2  # the ensemble of the fold networks
    assert result.metrics["p_value"] < 0.01


def test_threshold_and_calibration_are_stored_and_used(learned_result):
    result, out, _ = learned_result
    assert result.out_path == str(out)
    meta = load_model(out, device="cpu").metadata
    assert meta["calibration"]["method"] == "platt"
    assert meta["threshold"] == result.model.threshold == result.metrics["threshold"]
    assert meta["learned"] is True and meta["ensemble"] == 2
    assert meta["metrics"]["final"] is True and meta["data_summary"]["split"] == "2-fold by sample"
    assert meta["threshold_sd"] is None or meta["threshold_sd"] >= 0
    assert len(meta["threshold_folds"]) <= 2
    loaded = load_model(out, device="cpu")
    data = toy_set(24, groups=6)
    predictions = classify(data.bf, loaded)
    assert predictions.threshold == result.model.threshold
    # the file stores float16 weights: P(CTC) within ~1e-4 of the in-memory model's
    np.testing.assert_allclose(classify(data.bf, result.model).p_ctc, predictions.p_ctc, atol=2e-3)
    # p_ctc is the calibrated probability, not the plain sigmoid of the logit
    batch = prepare_batch(data.bf, SIZE)
    raw = torch.sigmoid(loaded.network(batch)).detach().numpy().ravel()
    a, b = meta["calibration"]["a"], meta["calibration"]["b"]
    logits = np.log(raw / (1 - raw))
    np.testing.assert_allclose(predictions.p_ctc, 1 / (1 + np.exp(-(a * logits + b))), atol=1e-4)


def test_progress_reports_folds_batches_epochs_and_done(learned_result):
    result, _, events = learned_result
    phases = [e.phase for e in events]
    assert phases[-1] == "done"
    assert phases.count("epoch_end") == len(result.history)
    assert {e.fold for e in events} == {1, 2} and {e.folds for e in events} == {2}
    batches = [e for e in events if e.phase == "batch"]
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in batches[1:])
    assert all(e.elapsed_s >= 0 for e in events)
    assert events[-1].best_f1 == result.metrics["f1"]


def test_pure_noise_labels_learn_nothing():
    rng = np.random.default_rng(3)
    images = [rng.integers(900, 1100, (SIZE, SIZE)).astype(np.uint16) for _ in range(40)]
    labels = list(rng.permutation(["CTC"] * 12 + ["WBC"] * 28))
    result = train(fast_config(epochs=2), TrainingSet(bf=images, labels=labels))
    assert result.learned is False
    assert "learned nothing" in result.warning
    assert result.model.metadata["learned"] is False
    assert result.model.metadata["warning"] == result.warning


def test_same_seed_same_model_different_seed_different_model():
    data = toy_set(16)
    config = fast_config(epochs=1, augment=("geometric", "noise"))
    a, b = train(config, data), train(config, data)
    c = train(dataclasses.replace(config, seed=1), data)
    state_a, state_b, state_c = (r.model.network.state_dict() for r in (a, b, c))
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert any(
        not torch.equal(state_a[k], state_c[k]) for k in state_a if state_a[k].is_floating_point()
    )
    np.testing.assert_array_equal(
        classify(data.bf, a.model).p_ctc, classify(data.bf, b.model).p_ctc
    )
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


def test_one_fold_uses_a_validation_split_and_no_ensemble():
    result = train(fast_config(epochs=1, folds=1, val_fraction=0.25), toy_set(16))
    assert result.metrics["split"] == "validation"
    assert sum(result.metrics["n_val"].values()) == 4
    assert not hasattr(result.model.network, "members")


def test_without_the_ensemble_one_fold_network_is_kept():
    result = train(fast_config(epochs=1, ensemble=False), toy_set(16))
    assert not hasattr(result.model.network, "members")
    assert result.model.metadata.get("ensemble", 1) == 1
    assert sum(result.metrics["n_val"].values()) == 16  # still scored out of fold


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
    assert len(result.history) == 1  # the partial epoch of fold 1 was judged
    assert 0.0 <= result.model.threshold <= 1.0
    predictions = classify(data.bf, result.model)
    assert len(predictions) == 24 and np.isfinite(predictions.p_ctc).all()
    assert load_model(out).threshold == result.model.threshold  # complete file written


def test_cancel_before_the_first_batch_still_gives_a_model():
    result = train(fast_config(epochs=3), toy_set(12), should_stop=lambda: True)
    assert result.cancelled
    assert len(result.history) == 1 and result.history[0]["train_loss"] is None
    assert len(classify(toy_set(12).bf, result.model)) == 12


def test_early_stopping_on_a_plateau(monkeypatch):
    # a held-out score that never improves after epoch 1 stops each fold after `patience`
    def flat(logits, y, pos_weight):
        return {
            "val_calibrated_loss": 1.0,
            "val_loss": 1.0,
            "val_pr_auc": 0.5,
            "val_f1": 0.5,
            "val_threshold": 0.5,
        }

    monkeypatch.setattr(fit_module, "validation_scores", flat)
    result = train(fast_config(epochs=10, patience=2), toy_set(12))
    assert result.stopped_early and not result.cancelled
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 1, 2, 3]
    assert result.metrics["best_epochs"] == [1, 1]


def test_the_default_starts_from_the_shipped_pretrained_weights():
    config = TrainConfig()
    assert config.pretrained == "synthetic" and config.pixel_size_um == 0.55
    result = train(fast_config(epochs=1, pretrained="synthetic", pixel_size_um=0.55), toy_set(16))
    assert result.model.metadata["pretrained"] == "weights:synthetic_resnet18.pt"
    assert result.history[0]["epoch"] == 0  # the pretrained network itself is a candidate
    # the toy cells declare no pixel size, so the model knows none (issue 20's scale rule)
    assert result.model.normalisation["pixel_size_um"] is None


def test_fine_tuning_keeps_the_starting_weights_as_a_candidate(learned_result, tmp_path):
    _, out, _ = learned_result
    result = train(fast_config(epochs=1, pretrained=str(out)), toy_set(16, seed=5))
    assert result.history[0]["epoch"] == 0 and result.history[0]["train_loss"] is None
    assert result.model.metadata["pretrained"] == "model:model.pt"


def test_aux_nucleus_head_is_training_only(tmp_path):
    out = tmp_path / "aux.pt"
    result = train(
        fast_config(epochs=1, dapi_strategy="aux_nucleus", out=str(out), ensemble=False),
        toy_set(16, dapi=True),
    )
    network = result.model.network
    assert not network.layer2._forward_hooks  # hook removed
    assert set(network.state_dict()) == set(load_model(out).network.state_dict())
    assert load_model(out).metadata["dapi_strategy"] == "aux_nucleus"


@pytest.mark.parametrize("strategy", ["substitute", "blend"])
def test_dapi_strategies_train(strategy):
    result = train(
        fast_config(epochs=1, dapi_strategy=strategy, augment=("photometric",)),
        toy_set(16, dapi=True),
    )
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
    data = toy_set(24, groups=4)
    events: list[TrainProgress] = []
    report = cross_validate(fast_config(epochs=1), data, k=2, progress=events.append)
    assert report["k"] == 2 and len(report["folds"]) == 2
    assert sum(f["n_test"] for f in report["folds"]) == 24
    for key in ("precision", "recall", "f1", "roc_auc", "ece"):
        assert 0.0 <= report["mean"][key] <= 1.0
        assert report["sd"][key] >= 0.0
        assert "±" in report["summary"][key]
    assert report["threshold_sd"] >= 0.0
    assert {e.fold for e in events} == {1, 2} and {e.folds for e in events} == {2}
    assert not report["cancelled"]


def test_head_only_training_changes_only_the_last_layer(learned_result):
    _, out, _ = learned_result
    with pytest.raises(ValueError, match="needs pretrained weights"):
        fast_config(train_layers="head").validated()
    starts = [m.state_dict() for m in load_model(out, device="cpu").network.members]
    result = train(
        fast_config(epochs=2, pretrained=str(out), train_layers="head", ensemble=False),
        toy_set(16, seed=7),
    )
    state = result.model.network.state_dict()
    # the best fold's network, which started from the start ensemble's network of its fold
    changed = [{k for k in state if not torch.equal(state[k], start[k])} for start in starts]
    assert min(changed, key=len) <= {"fc.weight", "fc.bias"}  # BatchNorm statistics kept too


def test_an_uncalibrated_model_is_not_judged_by_its_log_loss():
    from napari_deparray_ctc.core.training.calibration import assess_learning

    y = np.array([0] * 30 + [1] * 10)
    p = np.r_[np.full(30, 0.9), np.full(10, 0.99)]  # ranks perfectly, probabilities wrong
    assert assess_learning(y, p, 0.95, calibrated=False)["learned"]
    assert not assess_learning(y, p, 0.95, calibrated=True)["learned"]


def test_every_model_carries_its_training_cells_feature_summary(learned_result):
    from napari_deparray_ctc.core.model.loaded import load_model

    result, out, _ = learned_result
    summary = result.model.metadata["feature_summary"]
    assert summary["n_cells"] == 24 and len(summary["mean"]) == len(summary["names"])
    assert load_model(out, device="cpu").metadata["feature_summary"] == summary  # in the file


def test_a_model_trained_with_morphology_stores_the_stack_and_calls_with_it(tmp_path):
    out = tmp_path / "stacked.pt"
    data = toy_set(24, groups=6)
    result = train(fast_config(epochs=2, morphology=True, out=str(out)), data)
    stack = result.model.metadata["morphology_stack"]
    assert stack is not None and len(stack["coef"]) == 9
    assert set(stack["network_only"]) == {"calibration", "threshold"}
    loaded = load_model(out)
    predictions = classify(data.bf, loaded)
    # the same networks without the stack give other scores: the stack is applied
    plain = dataclasses.replace(loaded, metadata={**loaded.metadata, "morphology_stack": None})
    plain_predictions = classify(data.bf, plain)
    assert predictions.p_ctc.shape == (24,)
    assert not np.allclose(predictions.p_ctc, plain_predictions.p_ctc)


def test_without_morphology_no_stack_is_stored(tmp_path):
    result = train(fast_config(epochs=1), toy_set(16))
    assert result.model.metadata["morphology_stack"] is None


def test_flat_field_is_stored_in_the_model_file_spec():
    result = train(fast_config(epochs=1, flat_field=True), toy_set(16))
    assert result.model.normalisation["flat_field"] == "plane"
    default = train(fast_config(epochs=1), toy_set(16))
    assert default.model.normalisation["flat_field"] is None


def test_random_convolution_training_changes_the_fit_and_is_recorded():
    data = toy_set(16)
    config = fast_config(epochs=1, folds=1, augment=("geometric",), random_convolution=False)
    plain = train(config, data)
    with_rc = train(
        fast_config(epochs=1, folds=1, augment=("geometric",), random_convolution=True), data
    )
    a, b = plain.model.network.state_dict(), with_rc.model.network.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    assert with_rc.model.metadata["train_config"]["random_convolution"] is True
    assert TrainConfig().random_convolution is True  # the default since train_lever_dev.py
