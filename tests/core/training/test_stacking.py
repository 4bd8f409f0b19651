"""The morphology stack (core.training.stacking); a model trained with it: test_train.py."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deparray_ctc.core.training.stacking import (
    fit_morphology_stack,
    stacked_logits,
    stacked_oof_logits,
)


def shape_informative(n: int = 200, seed: int = 0):
    """A weak logit and one feature that separates the classes well."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    logits = 0.3 * y + rng.normal(0, 1, n)
    features = rng.normal(0, 1, (n, 8))
    features[:, 0] += 3.0 * y
    return logits, y, features


def test_the_stack_reads_the_feature_the_logit_misses():
    logits, y, features = shape_informative()
    spec = fit_morphology_stack(logits, y, features)
    assert spec["inputs"][0] == "network_logit" and len(spec["coef"]) == 9
    assert abs(spec["coef"][1]) > abs(spec["coef"][0])  # feature 0 weighs more than the logit
    test_logits, test_y, test_features = shape_informative(seed=1)
    stacked = stacked_logits(spec, test_logits, test_features)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(test_y, stacked) > roc_auc_score(test_y, test_logits) + 0.2


def test_out_of_fold_stacked_logits_score_every_cell_without_its_own_fit():
    logits, y, features = shape_informative(60)
    oof = stacked_oof_logits(logits, y, features)
    in_sample = stacked_logits(fit_morphology_stack(logits, y, features), logits, features)
    assert oof.shape == (60,) and np.isfinite(oof).all()
    assert not np.allclose(oof, in_sample)


def test_too_few_cells_of_a_class_and_mismatched_inputs_are_refused():
    logits, y, features = shape_informative(20)
    one_ctc = np.zeros(20, dtype=int)
    one_ctc[0] = 1
    with pytest.raises(ValueError, match="two cells of each class"):
        fit_morphology_stack(logits, one_ctc, features)
    with pytest.raises(ValueError, match="same cells"):
        fit_morphology_stack(logits[:5], y, features)
    spec = fit_morphology_stack(logits, y, features)
    with pytest.raises(ValueError, match="takes 8 features"):
        stacked_logits(spec, logits, features[:, :3])
    with pytest.raises(ValueError, match="version"):
        stacked_logits({**spec, "version": 99}, logits, features)
