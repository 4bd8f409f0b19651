"""The model-file policy (core.model_files): in-progress file, leftovers, never keep a worse model."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from napari_deparray_ctc.core.model.file_policy import (
    MIN_VALIDATION_PER_CLASS,
    decide_model_destination,
    in_progress_path,
    is_not_worse,
    place_trained_model,
    recover_leftover,
    start_model_file,
    stored_val_metrics,
    validation_too_small,
)
from napari_deparray_ctc.core.training.train import TrainConfig, fine_tuning_settings


def _meta(ap: float | None, f1: float | None, n_ctc: int = 40, n_wbc: int = 120, learned=True):
    metrics = {"n_val": {"CTC": n_ctc, "WBC": n_wbc}}
    if ap is not None:
        metrics["average_precision"] = ap
    if f1 is not None:
        metrics["f1"] = f1
    return {
        "arch": "resnet18",
        "threshold": 0.5,
        "image_size": 32,
        "metrics": metrics,
        "learned": learned,
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, bytes]:
    """Model files with given stored figures, as bytes (copied into each test's folder)."""
    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    folder = tmp_path_factory.mktemp("models")
    network = build_network("resnet18")
    cases = {
        "good": _meta(0.85, 0.80),
        "tiny": _meta(1.0, 1.0, n_ctc=2, n_wbc=1),
        "nothing": _meta(0.30, 0.42, learned=False),
    }
    out = {}
    for name, meta in cases.items():
        save_model(folder / f"{name}.pt", network, meta)
        out[name] = (folder / f"{name}.pt").read_bytes()
    return out


def _place(tmp_path: Path, saved: dict[str, bytes], name: str) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(saved[name])
    return path


def test_in_progress_path() -> None:
    assert in_progress_path("/a/model.pt") == Path("/a/model.in-progress.pt")
    assert in_progress_path("/a/model") == Path("/a/model.in-progress.pt")


def test_recover_leftover_moves_an_interrupted_run_aside(tmp_path: Path) -> None:
    assert recover_leftover(tmp_path / "m.in-progress.pt") is None
    left = tmp_path / "m.in-progress.pt"
    left.write_bytes(b"half a run")
    stamp = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))
    os.utime(left, (stamp, stamp))
    aside = recover_leftover(left)
    assert (
        aside == tmp_path / "m.recovered-20260102-030405.pt" and aside.read_bytes() == b"half a run"
    )
    left.write_bytes(b"another")
    os.utime(left, (stamp, stamp))
    assert recover_leftover(left).name == "m.recovered-20260102-030405-2.pt"
    assert not left.exists()


def test_validation_too_small_says_why() -> None:
    assert validation_too_small(_meta(0.9, 0.9)) is None
    note = validation_too_small(_meta(1.0, 1.0, n_ctc=2, n_wbc=1))
    assert "only 2 CTC and 1 WBC" in note and str(MIN_VALIDATION_PER_CLASS) in note
    assert "does not say" in validation_too_small({"metrics": {}})
    # files of the first format: sizes in metrics n_ctc / n_wbc of the validation split
    assert validation_too_small({"metrics": {"n_ctc": 30, "n_wbc": 90}}) is None


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        ((0.90, 0.7), (0.85, 0.8), True),  # higher PR-AUC wins
        ((0.80, 0.9), (0.85, 0.8), False),
        ((0.85, 0.8), (0.8502, 0.7), True),  # PR-AUC tie: higher F1
        ((0.85, 0.6), (0.8502, 0.7), False),
        ((None, 0.8), (None, 0.7), True),  # old files without PR-AUC: F1
        ((None, 0.8), (0.85, 0.7), False),
        ((0.1, 0.1), (None, None), True),  # an old file without figures never blocks
    ],
)
def test_is_not_worse(new, old, expected) -> None:
    assert is_not_worse(_meta(*new), _meta(*old)) is expected


def test_a_new_file_is_written_where_asked(tmp_path: Path) -> None:
    decision = decide_model_destination(tmp_path / "m.pt", _meta(0.8, 0.7))
    assert decision.path == tmp_path / "m.pt" and not decision.replaces
    assert "PR-AUC 0.800" in decision.message


def test_a_better_model_is_never_replaced(tmp_path: Path, saved) -> None:
    out = _place(tmp_path, saved, "good")
    worse = decide_model_destination(out, _meta(0.70, 0.6))
    assert worse.kept_previous and not worse.replaces and worse.path != out
    assert worse.path.parent == tmp_path and worse.path.suffix == ".pt"
    assert "worse" in worse.message and worse.path.name in worse.message
    better = decide_model_destination(out, _meta(0.95, 0.9))
    assert better.path == out and better.replaces
    forced = decide_model_destination(out, _meta(0.1, 0.1), overwrite_if_worse=True)
    assert forced.path == out and forced.replaces
    assert out.read_bytes() == saved["good"]  # deciding never touches the file


def test_a_two_cell_score_never_decides(tmp_path: Path, saved) -> None:
    # issue 11 item 4: a model validated on 2 + 1 cells (F1 1.0) must not block a real one
    out = _place(tmp_path, saved, "tiny")
    decision = decide_model_destination(out, _meta(0.80, 0.72))
    assert decision.path == out and decision.replaces
    assert "too few validation cells" in decision.message
    # and a new model with too few cells does not replace one with real figures
    out = _place(tmp_path, saved, "good")
    decision = decide_model_destination(out, _meta(1.0, 1.0, n_ctc=3, n_wbc=2))
    assert decision.kept_previous and decision.path != out
    assert "too few validation cells" in decision.message


def test_a_model_that_learned_nothing_replaces_nothing(tmp_path: Path, saved) -> None:
    out = _place(tmp_path, saved, "good")
    nothing = _meta(0.99, 0.99, learned=False)
    for overwrite in (False, True):
        decision = decide_model_destination(out, nothing, overwrite_if_worse=overwrite)
        assert decision.kept_previous and decision.path != out
        assert "learned nothing" in decision.message
    fresh = decide_model_destination(tmp_path / "new.pt", nothing)
    assert fresh.path == tmp_path / "new.pt" and "learned nothing" in fresh.message
    # an old model that learned nothing is replaced by one that did
    out = _place(tmp_path, saved, "nothing")
    assert decide_model_destination(out, _meta(0.5, 0.5)).replaces


def test_an_unreadable_file_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    out.write_bytes(b"not a model")
    decision = decide_model_destination(out, _meta(0.99, 0.99))
    assert decision.kept_previous and decision.path != out
    assert "not a readable model" in decision.message and str(out) in decision.message


def test_stored_val_metrics(tmp_path: Path, saved) -> None:
    assert stored_val_metrics(_place(tmp_path, saved, "good")) == (
        pytest.approx(0.85),
        pytest.approx(0.80),
    )


# ---------------------------------------------------------------- the whole policy, two calls


def _result(path: Path | None, meta: dict, cancelled: bool = False, warning: str | None = None):
    """A stand-in for a TrainResult whose model was written to ``path``."""
    return SimpleNamespace(
        out_path=None if path is None else str(path),
        model=SimpleNamespace(metadata=meta),
        cancelled=cancelled,
        warning=warning,
    )


def _train_into(start, saved: dict[str, bytes], name: str) -> Path:
    """What training does: the model written to the in-progress file."""
    start.in_progress.write_bytes(saved[name])
    return start.in_progress


def test_start_and_place_a_first_model(tmp_path: Path, saved) -> None:
    out = tmp_path / "m.pt"
    start = start_model_file(out)
    assert start.in_progress == tmp_path / "m.in-progress.pt" and start.recovered is None
    written = _train_into(start, saved, "good")
    placed = place_trained_model(_result(written, _meta(0.85, 0.8)), out)
    assert placed.path == out and out.read_bytes() == saved["good"]
    assert not written.exists() and placed.message.startswith(f"Model saved to {out}")
    assert not placed.destination.kept_previous


def test_place_never_replaces_a_better_model_and_names_the_callers_option(
    tmp_path: Path, saved
) -> None:
    out = _place(tmp_path, saved, "good")
    start = start_model_file(out)
    written = _train_into(start, saved, "nothing")
    hint = "give --overwrite-if-worse"
    placed = place_trained_model(
        _result(written, _meta(0.5, 0.5), warning="Check it."), out, overwrite_hint=hint
    )
    assert out.read_bytes() == saved["good"] and placed.path != out
    assert placed.path.read_bytes() == saved["nothing"] and not written.exists()
    assert placed.destination.kept_previous
    assert placed.message.startswith("Check it. ")
    assert "Give --overwrite-if-worse to replace it." in placed.message
    assert "Tick" not in placed.message
    # the widget's wording by default; and "overwrite" replaces it
    assert (
        "Tick 'Overwrite even if worse'" in decide_model_destination(out, _meta(0.5, 0.5)).message
    )
    written = _train_into(start, saved, "nothing")
    forced = place_trained_model(_result(written, _meta(0.5, 0.5)), out, overwrite_if_worse=True)
    assert forced.path == out and out.read_bytes() == saved["nothing"]


def test_place_after_a_stop_and_a_recovered_leftover(tmp_path: Path, saved) -> None:
    out = tmp_path / "m.pt"
    in_progress_path(out).write_bytes(b"left by a crash")
    start = start_model_file(out)
    assert start.recovered is not None and start.recovered.read_bytes() == b"left by a crash"
    written = _train_into(start, saved, "good")
    placed = place_trained_model(
        _result(written, _meta(0.85, 0.8), cancelled=True), out, recovered=start.recovered
    )
    assert placed.message.startswith("Stopped; the best model so far was kept. ")
    assert placed.message.endswith(f"kept as {start.recovered.name}.")
    assert out.read_bytes() == saved["good"]


def test_place_without_a_written_model_touches_nothing(tmp_path: Path, saved) -> None:
    out = _place(tmp_path, saved, "good")
    placed = place_trained_model(_result(None, _meta(0.9, 0.9)), out)
    assert placed.path is None and placed.destination is None
    assert placed.message == f"No model was written; {out} was left as it was."
    assert out.read_bytes() == saved["good"]


def test_only_rank_0_moves_files(tmp_path: Path, saved, monkeypatch) -> None:
    out = tmp_path / "m.pt"
    in_progress_path(out).write_bytes(b"leftover")
    monkeypatch.setenv("RANK", "1")
    start = start_model_file(out)
    assert start.recovered is None and start.in_progress.read_bytes() == b"leftover"
    placed = place_trained_model(_result(start.in_progress, _meta(0.9, 0.9)), out)
    assert placed.path is None and not out.exists() and "rank 0" in placed.message


# ---------------------------------------------------------------- the fine-tuning rule


def test_fine_tuning_takes_the_starting_models_network_and_size(tmp_path: Path) -> None:
    start = tmp_path / "lab.pt"
    meta = {"arch": "resnet34", "image_size": 96}
    assert fine_tuning_settings(meta, start) == {
        "arch": "resnet34",
        "image_size": 96,
        "pretrained": str(start),
    }
    # the user's explicit choices win; other settings pass through
    given = {"image_size": 64, "epochs": 3}
    assert fine_tuning_settings(meta, start, given) == {
        "arch": "resnet34",
        "image_size": 64,
        "epochs": 3,
        "pretrained": str(start),
    }
    # a model file without a stored size was trained at the default size
    assert fine_tuning_settings({"arch": "resnet18"}, start)["image_size"] == 64
    config = TrainConfig(**fine_tuning_settings(meta, start, {"epochs": 1})).validated()
    assert (config.arch, config.image_size, config.pretrained) == ("resnet34", 96, str(start))
    with pytest.raises(ValueError, match="not both"):
        fine_tuning_settings(meta, start, {"pretrained": "auto"})
