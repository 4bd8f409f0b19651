"""Site calibration: Platt and threshold refitted from a few labelled cells of a new site."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_deparray_ctc.core.errors import ModelFileError
from napari_deparray_ctc.core.inference.classify import classify
from napari_deparray_ctc.core.inference.shift import (
    reference_summary,
    shift_check,
    training_feature_summary,
)
from napari_deparray_ctc.core.inference.site_calibration import (
    SiteCalibrationError,
    calibrate_to_site,
    check_site_labels,
    estimate_prior,
    expected_f1_threshold,
)
from napari_deparray_ctc.core.inference.suggest import select_for_calibration, suggest_cells
from napari_deparray_ctc.core.model.loaded import LoadedModel, load_model, save_model
from napari_deparray_ctc.core.training.calibration import apply_calibration

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 24


class Brightness(torch.nn.Module):
    """A stand-in network: logit = scaled mean of a BatchNorm'd convolution (a "bright cell"
    detector), so its logits rank the toy CTCs above the toy WBCs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(1)
        self.fc = torch.nn.Linear(1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 9)
            self.fc.weight.fill_(8.0)
            self.fc.bias.fill_(-2.0)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean(dim=(2, 3)))


def _cells(n: int, ctc_share: float, seed: int, contrast: float = 2000.0):
    """Toy cells: CTCs are large bright discs, WBCs small ones; noisy, 16-bit."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(n):
        ctc = rng.random() < ctc_share if i > 1 else i == 0
        radius = rng.uniform(7, 10) if ctc else rng.uniform(3, 7)
        disc = np.hypot(yy - SIZE / 2, xx - SIZE / 2) < radius
        noise = rng.normal(0, 300, disc.shape)
        images.append((1000 + contrast * disc + noise).clip(0, 65535).astype(np.uint16))
        labels.append("CTC" if ctc else "WBC")
    return images, labels


@pytest.fixture()
def model() -> LoadedModel:
    torch.manual_seed(0)
    train_images, _ = _cells(40, 0.3, seed=1)
    meta = {
        "arch": "resnet18",
        "threshold": 0.5,
        "image_size": SIZE,
        "calibration": {"method": "platt", "a": 1.0, "b": 0.0},
        "threshold_rule": "half_f1",
        "feature_summary": training_feature_summary(train_images),
        "created": "2025-01-01T00:00:00",
    }
    return LoadedModel(Brightness().eval(), meta)


def _partly_labelled(labels, n_ctc: int, n_wbc: int):
    """Only the first n_ctc CTCs and n_wbc WBCs keep their label."""
    out, seen = [], {"CTC": 0, "WBC": 0}
    for label in labels:
        limit = n_ctc if label == "CTC" else n_wbc
        out.append(label if seen[label] < limit else None)
        seen[label] += 1
    return out


def test_too_few_labels_or_one_class_is_refused_with_the_counts(model):
    with pytest.raises(SiteCalibrationError) as info:
        check_site_labels(["WBC"] * 12 + [None] * 8)
    assert str(info.value).startswith(
        "calibration needs at least 5 CTC and 5 WBC cells with a label; this export has "
        "0 CTC and 12 WBC (and 8 cells without a label)"
    )
    images, labels = _cells(30, 0.3, seed=2)
    few = _partly_labelled(labels, 3, 10)
    with pytest.raises(SiteCalibrationError, match="has 3 CTC and 10 WBC"):
        calibrate_to_site(model, images, few, data_name="site B")
    # a stream (no length) is checked after it was read: the same words
    with pytest.raises(SiteCalibrationError, match="site B has 3 CTC and 10 WBC"):
        calibrate_to_site(model, iter(images), few, data_name="site B")


def test_a_site_model_from_a_few_labels_keeps_the_weights(model):
    images, labels = _cells(80, 0.2, seed=3, contrast=1500.0)  # another instrument
    partial = _partly_labelled(labels, 6, 8)
    ids = [f"b{i:03d}" for i in range(80)]
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    ticks = []
    site = calibrate_to_site(
        model,
        images,
        partial,
        cell_ids=ids,
        data_name="site B",
        batch_size=16,
        progress=lambda done, total: ticks.append((done, total)),
    )
    assert ticks[-1] == (80, 80)
    for key, value in site.network.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    profile = site.site_profile
    assert profile["n_labelled"] == {"CTC": 6, "WBC": 8}
    assert profile["n_cells"] == 80 and profile["data_name"] == "site B"
    assert len(profile["cell_ids"]["CTC"]) == 6 and profile["cell_ids"]["CTC"][0] == "b000"
    assert profile["source_model"]["threshold"] == 0.5
    assert profile["source_model"]["calibration"] == model.calibration
    assert profile["feature_summary"]["n_cells"] == 80
    assert profile["adapted"] is None and profile["prior"]["method"] == "labelled"
    assert site.calibration["method"] == "platt" and site.calibration["n_cells"] == 14
    assert site.threshold != model.threshold
    assert 0 < site.threshold < 1
    # the site model's P(CTC) is the site calibration of the same network's logits
    p_site = classify(images, site).p_ctc
    logits = classify(images, LoadedModel(model.network, {**model.metadata, "calibration": None}))
    z = np.log(logits.p_ctc) - np.log1p(-logits.p_ctc)
    np.testing.assert_allclose(p_site, apply_calibration(site.calibration, z), atol=1e-6)
    assert model.site_profile is None  # the given model is left as it was


def test_adapt_stores_the_site_s_batchnorm_statistics_only(model):
    images, labels = _cells(40, 0.3, seed=4, contrast=800.0)
    site = calibrate_to_site(model, images, _partly_labelled(labels, 5, 5), adapt=True)
    assert site.site_profile["adapted"] == {"n_cells": 40}
    assert not torch.equal(site.network.bn.running_mean, model.network.bn.running_mean)
    torch.testing.assert_close(site.network.conv.weight, model.network.conv.weight)
    torch.testing.assert_close(site.network.fc.weight, model.network.fc.weight)


def test_the_prior_can_be_estimated_when_labels_were_picked_by_class(model):
    images, labels = _cells(120, 0.1, seed=5)
    partial = _partly_labelled(labels, 8, 8)  # half CTC among the labels, ~10 % at the site
    as_labelled = calibrate_to_site(model, images, partial)
    estimated = calibrate_to_site(model, images, partial, prior="estimate")
    assert estimated.site_profile["prior"]["labelled_ctc_fraction"] == 0.5
    share = estimated.site_profile["prior"]["ctc_fraction"]
    assert share < as_labelled.site_profile["prior"]["ctc_fraction"]
    assert estimated.calibration["b"] < as_labelled.calibration["b"]
    with pytest.raises(ValueError, match="prior"):
        calibrate_to_site(model, images, partial, prior="magic")


def test_stopping_returns_nothing(model):
    images, labels = _cells(30, 0.3, seed=6)
    assert calibrate_to_site(model, images, labels, should_stop=lambda: True) is None


def test_estimate_prior_and_the_expected_f1_threshold():
    rng = np.random.default_rng(0)
    y = rng.random(20000) < 0.1
    z = np.where(y, rng.normal(2, 1, y.size), rng.normal(-1, 1, y.size))
    lik = np.exp(-0.5 * (z - 2) ** 2) / np.exp(-0.5 * (z + 1) ** 2)
    p_half = lik / (1 + lik)  # exact P(CTC | z) at a 50 % share
    assert estimate_prior(p_half, 0.5) == pytest.approx(y.mean(), abs=0.01)
    t, f1 = expected_f1_threshold([0.9, 0.8, 0.1, 0.05], "half_f1")
    assert t == pytest.approx(f1 / 2) and 0.5 < f1 < 1
    t_f1, _ = expected_f1_threshold([0.9, 0.8, 0.1, 0.05], "f1")
    assert t_f1 == pytest.approx(0.8)
    assert expected_f1_threshold([], "half_f1") == (0.5, 0.0)


def test_suggest_for_calibration_takes_the_top_ranks_and_spreads_the_rest():
    rng = np.random.default_rng(0)
    p = rng.permutation(np.linspace(0.001, 0.999, 200))
    picked = select_for_calibration(p, 20)
    assert len(picked) == len(set(picked)) == 20
    ranks = np.argsort(np.argsort(-p))[picked]  # 0 = highest P(CTC)
    assert sorted(ranks[:10]) == list(range(10))  # half: the ten top-ranked cells
    spread = np.sort(ranks[10:])
    assert spread.min() < 25 and spread.max() > 180  # the rest from doubtful to confident
    assert np.all(np.diff(spread) > 10)  # evenly spread, not bunched
    # the threshold plays no part: an over-calling model (every P high) picks the same ranks
    assert select_for_calibration(0.5 + 0.5 * p, 20) == picked
    # fewer cells than asked: all of them, once each
    assert sorted(select_for_calibration([0.9, 0.1, 0.5], 10)) == [0, 1, 2]
    assert select_for_calibration(p, 0) == []


def test_suggest_cells_for_calibration(model):
    images, _ = _cells(30, 0.3, seed=7)
    ids = suggest_cells(images, model, n=6, purpose="calibration")
    assert len(ids) == 6
    with pytest.raises(ValueError, match="purpose"):
        suggest_cells(images, model, n=6, purpose="fun")


@pytest.fixture()
def resnet_model() -> LoadedModel:
    from napari_deparray_ctc.core.model.loaded import build_network

    torch.manual_seed(0)
    train_images, _ = _cells(30, 0.3, seed=1)
    meta = {
        "arch": "resnet18",
        "threshold": 0.5,
        "image_size": SIZE,
        "feature_summary": training_feature_summary(train_images),
    }
    return LoadedModel(build_network("resnet18").eval(), meta)


def test_the_site_model_file_round_trip_and_its_shift_check(resnet_model, tmp_path):
    from napari_deparray_ctc.core.model.card import model_card_lines, model_summary_lines

    source = tmp_path / "model.pt"
    save_model(source, resnet_model)
    images, labels = _cells(40, 0.3, seed=8)
    site = calibrate_to_site(
        load_model(source, "cpu"), images, _partly_labelled(labels, 5, 5), source=source
    )
    out = tmp_path / "site.pt"
    save_model(out, site)
    loaded = load_model(out, "cpu")
    profile = loaded.site_profile
    assert profile["source_model"]["file"] == "model.pt"
    assert len(profile["source_model"]["sha256"]) == 64
    assert loaded.threshold == pytest.approx(site.threshold)
    card = "\n".join(model_card_lines(loaded.metadata))
    assert "calibrated for a site:" in card and "5 CTC + 5 WBC labelled cells of 40" in card
    assert "site profile: calibrated from model.pt (SHA-256" in card
    assert "site shift check: image features of 40 site cells" in card
    assert any("calibrated for a site" in line for line in model_summary_lines(loaded.metadata))
    # new cells are compared with the site's cells, and the sentence says so
    assert reference_summary(loaded.metadata)[1] == "site"
    other, _ = _cells(40, 0.3, seed=9, contrast=200.0)
    noisy = [
        (im + np.random.default_rng(i).normal(0, 3000, im.shape)).clip(0, 65535).astype(np.uint16)
        for i, im in enumerate(other)
    ]
    result = shift_check(noisy, loaded.metadata)
    assert result["against"] == "site" and result["fire"]
    assert "cells of the site this model was calibrated for" in result["warning"]
    assert shift_check(images, loaded.metadata)["fire"] is False


def test_a_damaged_site_profile_is_refused_and_a_newer_one_kept(resnet_model, tmp_path):
    for bad in ("text", {"version": 1, "created": "now"}, {"version": "one"}):
        path = tmp_path / "bad.pt"
        save_model(path, resnet_model, {"site_profile": bad})
        with pytest.raises(ModelFileError, match="site profile"):
            load_model(path, "cpu")
    path = tmp_path / "newer.pt"
    save_model(path, resnet_model, {"site_profile": {"version": 99, "what": "future"}})
    from napari_deparray_ctc.core.model.card import model_card_lines

    meta = load_model(path, "cpu").metadata
    assert meta["site_profile"]["what"] == "future"
    assert any("written by a newer version" in line for line in model_card_lines(meta))


def test_a_site_calibration_that_does_not_beat_the_model_s_own_says_so(model):
    images, labels = _cells(60, 0.3, seed=10)
    partial = _partly_labelled(labels, 6, 6)
    first = calibrate_to_site(model, images, partial)
    # a model already calibrated on exactly these cells: the site fit cannot do better
    tuned = LoadedModel(model.network, {**model.metadata, "calibration": first.calibration})
    again = calibrate_to_site(tuned, images, partial)
    figures = again.site_profile["figures"]
    assert figures["log_loss_site_loo"] > figures["log_loss_model"]
    assert "does not beat the model's own" in again.site_profile["warning"]
    # and it is never a worse calibration: the model's own calibration and threshold stay
    assert figures["kept_model_calibration"] is True
    assert again.calibration == tuned.calibration
    assert again.threshold == pytest.approx(tuned.threshold)


def test_labels_picked_by_class_are_not_judged_by_their_own_mix(model):
    """With ``prior="estimate"`` the labelled cells are a case-control sample (their mix of
    classes is the picker's), so their log-loss does not decide between calibrations: the
    site fit and its estimated prior are kept even where the labelled-cell guard would not."""
    images, labels = _cells(60, 0.3, seed=10)
    partial = _partly_labelled(labels, 6, 6)
    first = calibrate_to_site(model, images, partial)
    tuned = LoadedModel(model.network, {**model.metadata, "calibration": first.calibration})
    by_score = calibrate_to_site(tuned, images, partial)
    assert by_score.site_profile["figures"]["kept_model_calibration"] is True
    by_class = calibrate_to_site(tuned, images, partial, prior="estimate")
    figures = by_class.site_profile["figures"]
    assert figures["guard"].startswith("not applicable")
    assert figures["kept_model_calibration"] is False
    assert by_class.calibration != tuned.calibration
    assert not (by_class.site_profile["warning"] or "").count("does not beat")


def test_calibrating_a_site_model_again_starts_from_its_unchanged_source(tmp_path):
    import hashlib

    from napari_deparray_ctc.core.inference.site_calibration import calibration_start

    source = tmp_path / "lab.pt"
    source.write_bytes(b"the lab's model")
    site = tmp_path / "lab.site-ward3.pt"
    site.write_bytes(b"a site model")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()

    def profile(name, sha):
        return {"site_profile": {"source_model": {"file": name, "sha256": sha}}}

    assert calibration_start(site, profile("lab.pt", digest)) == source
    assert calibration_start(source, {}) == source  # not a site model: itself
    assert calibration_start(site, profile("gone.pt", digest)) == site  # source not beside it
    assert calibration_start(site, profile("../lab.pt", digest)) == site  # a name, not a path
    assert calibration_start(site, profile("lab.pt", None)) == site  # nothing to check against
    source.write_bytes(b"retrained since")  # another model under the same name
    assert calibration_start(site, profile("lab.pt", digest)) == site
