"""The model card of ``deparray-ctc info`` (``core.model_card.model_card_lines``)."""

from __future__ import annotations

from napari_deparray_ctc.core.model.card import model_card_lines

META = {
    "arch": "resnet34",
    "image_size": 48,
    "threshold": 0.31,
    "threshold_sd": 0.05,
    "calibration": {"method": "platt", "a": 0.9, "b": -1.25, "n_cells": 300},
    "data_summary": {
        "n_cells": 300,
        "n_ctc": 60,
        "n_wbc": 240,
        "n_groups": 2,
        "groups": ["P1", "P2"],
        "per_group": {"P1": {"CTC": 20, "WBC": 130}, "P2": {"CTC": 40, "WBC": 110}},
        "split": "3-fold by sample",
    },
    "metrics": {
        "f1": 0.8,
        "precision": 0.75,
        "recall": 0.86,
        "average_precision": 0.83,
        "n_val": {"CTC": 60, "WBC": 240},
        "split": "out-of-fold",
    },
    "train_config": {"epochs": 12, "folds": 3, "lr": 0.0001, "batch_size": 32, "seed": 4},
    "seed": 4,
    "ensemble": 3,
    "pretrained": "model:lab_a.pt",
    "augment": ["geometric", "noise"],
    "dapi_strategy": "substitute",
    "feature_summary": {"n_cells": 300, "n_groups": 2},
    "versions": {"napari_deparray_ctc": "0.2.0", "torch": "2.14.1"},
    "created": "2026-12-01T10:00:00+0000",
    "note": "hospital B, fine-tuned on 80 cells",
}


def test_the_card_holds_everything_the_issue_lists():
    text = "\n".join(model_card_lines(META))
    for expected in (
        "resnet34, 48 px bright-field input",  # architecture and input size
        "trained on 300 cells (60 CTC, 240 WBC) from 2 sample(s)",  # counts per class
        "P1 (20 CTC, 130 WBC), P2 (40 CTC, 110 WBC)",  # ... and per sample
        "validation on 60 CTC + 240 WBC: F1 0.800",  # validation metrics with their size
        "validation PR-AUC 0.830 (out-of-fold)",
        "threshold 0.310 (± 0.050 across folds)",  # threshold and calibration
        "P = sigmoid(0.900 x logit - 1.250), fitted on 300 out-of-fold cells",
        "ensemble of 3 networks",
        "started from model:lab_a.pt",
        "augmentation: geometric, noise; DAPI strategy: substitute",
        "shift check: image features of 300 training cells",
        "napari-deparray-ctc 0.2.0 with torch 2.14.1 on 2026-12-01T10:00:00+0000",  # versions, date
        "note from the trainer: hospital B, fine-tuned on 80 cells",
    ):
        assert expected in text, expected


def test_an_old_or_sparse_card_still_reads():
    lines = model_card_lines({"arch": "resnet18", "threshold": 0.5})
    text = "\n".join(lines)
    assert "resnet18" in text
    assert "calibration: none stored" in text
    assert "shift check: not possible" in text
    assert "note: none" in text
    # without per-sample counts the sample names are listed
    meta = {**META, "data_summary": {**META["data_summary"], "per_group": None}}
    assert "samples: P1, P2" in "\n".join(model_card_lines(meta))


def test_the_card_says_whether_cell_shape_features_take_part_in_the_call():
    assert "cell-shape features: not used" in "\n".join(model_card_lines(META))
    stack = {
        "inputs": ["network_logit", "log_area", "eccentricity", "texture"],
        "coef": [1.5, -0.2, 0.9, 0.1],
        "network_only": {"threshold": 0.42},
    }
    text = "\n".join(model_card_lines({**META, "morphology_stack": stack}))
    assert "network's score (weight 1.50) with 3 shape features" in text
    assert "strongest: eccentricity, log_area, texture" in text
    assert "the network alone had threshold 0.420" in text


def test_the_card_says_how_a_cell_reaches_the_network():
    from napari_deparray_ctc.core.inference.preprocess import training_normalisation
    from napari_deparray_ctc.core.model.card import model_card_lines

    def scale(normalisation: dict) -> str:
        meta = {"arch": "resnet18", "image_size": 64, "normalisation": normalisation}
        (line,) = [x for x in model_card_lines(meta) if x.startswith("network input:")]
        return line

    whole = scale(training_normalisation(0.55, None, n_cells=40))
    assert "every crop resized whole to 64 px" in whole
    assert "training cells declared no pixel size" in whole
    known = scale(training_normalisation(0.55, [0.55] * 30 + [None] * 10))
    assert "rescaled to 0.55 µm per pixel" in known
    assert "30 of 40 cells declared a pixel size" in known
    assert "whether its training cells declared one is not known" in scale({"pixel_size_um": 0.55})


def test_the_card_names_random_convolutions_only_when_training_used_them():
    with_rc = {**META, "train_config": {**META["train_config"], "random_convolution": True}}
    assert "augmentation: geometric, noise, random convolutions;" in "\n".join(
        model_card_lines(with_rc)
    )
    no_family = {**with_rc, "augment": []}  # no augmentation at all: none applied
    assert "augmentation: none;" in "\n".join(model_card_lines(no_family))
    assert "random convolutions" not in "\n".join(model_card_lines(META))
