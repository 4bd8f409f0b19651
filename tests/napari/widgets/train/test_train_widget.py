"""The "Train classifier" dock widget: pairing, refusals, live progress, Stop, real training."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_deparray_ctc.core.model.file_policy import in_progress_path
from napari_deparray_ctc.core.synth import write_export
from napari_deparray_ctc.core.training.train import TrainConfig
from napari_deparray_ctc.napari.cells import deparray_meta, set_cell_label
from napari_deparray_ctc.napari.session import session_for
from napari_deparray_ctc.napari.widgets.train.widget import CHOOSE_DAPI, TrainWidget

PLUGIN = "napari-deparray-ctc"
WAIT_MS = 240_000


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """Twenty labelled synthetic cells (10 CTC, 10 WBC), 32 px, one folder per class."""
    return write_export(
        tmp_path / "export", 20, ctc_fraction=0.5, seed=5, layout="classdirs", image_size=32
    )


@pytest.fixture
def viewer_widget(make_napari_viewer, export):
    viewer = make_napari_viewer()
    layers = viewer.open(str(export), plugin=PLUGIN)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train classifier")
    channels = {deparray_meta(layer)["channel"]: layer for layer in layers}
    yield viewer, widget, channels
    widget.stop()


def _tiny_settings(widget: TrainWidget, out: Path, epochs: int = 2) -> None:
    widget.settings.arch_combo.setCurrentText("resnet18")
    widget.settings.epochs_spin.setValue(epochs)
    widget.settings.size_spin.setValue(32)
    widget.settings.out_edit.setText(str(out))


def _wait(qtbot, widget: TrainWidget) -> None:
    qtbot.waitUntil(lambda: not widget.is_running, timeout=WAIT_MS)


# ------------------------------------------------------------------ pairing and refusals


def test_bf_and_dapi_are_paired_by_cell_id(viewer_widget) -> None:
    _viewer, widget, layers = viewer_widget
    assert widget.cells.bf_combo.currentText() == layers["BF"].name
    assert widget.cells.dapi_combo.currentText() == layers["DAPI"].name
    pairing = widget.cells.pairing()
    assert pairing.n_paired == 20
    assert pairing.cell_ids == deparray_meta(layers["DAPI"])["cell_ids"]
    assert "20 of 20 BF cells paired" in widget.cells.pairing_label.text()
    assert (
        "10 CTC" in widget.cells.counts_label.text()
        and "10 WBC" in widget.cells.counts_label.text()
    )
    # the default model file goes beside the export
    assert Path(widget.settings.out_edit.text()).parent == Path(layers["BF"].source.path)


def test_pairing_follows_cell_ids_not_order(viewer_widget) -> None:
    viewer, widget, layers = viewer_widget
    dapi = layers["DAPI"]
    meta = dict(deparray_meta(dapi))
    order = list(range(20))[::-1]
    shuffled = viewer.add_image(
        np.asarray(dapi.data)[order],
        name="reversed :: DAPI",
        metadata={"deparray": {**meta, "cell_ids": [meta["cell_ids"][i] for i in order]}},
    )
    widget.choose_layers(layers["BF"].name, shuffled.name)
    pairing = widget.cells.pairing()
    assert pairing.dapi_indices == order
    np.testing.assert_array_equal(
        np.asarray(shuffled.data)[pairing.dapi_indices[3]], np.asarray(dapi.data)[3]
    )


def test_ambiguous_dapi_needs_a_manual_choice(viewer_widget) -> None:
    viewer, widget, layers = viewer_widget
    dapi = layers["DAPI"]
    viewer.add_image(
        np.asarray(dapi.data), name="copy :: DAPI", metadata={"deparray": dict(deparray_meta(dapi))}
    )
    widget.cells.refresh()
    widget.cells._on_bf_changed(layers["BF"].name)  # a fresh automatic pairing
    assert widget.cells.dapi_combo.currentText() == CHOOSE_DAPI
    assert widget.start() is None
    assert "Several DAPI layers" in widget.last_message
    widget.cells.dapi_combo.setCurrentText("copy :: DAPI")
    assert widget.cells.pairing().dapi_layer.name == "copy :: DAPI"


def test_unpairable_layers_are_refused(viewer_widget, tmp_path) -> None:
    viewer, widget, layers = viewer_widget
    meta = dict(deparray_meta(layers["DAPI"]))
    stranger = viewer.add_image(
        np.asarray(layers["DAPI"].data),
        name="other :: DAPI",
        metadata={"deparray": {**meta, "cell_ids": [f"x{i}" for i in range(20)]}},
    )
    _tiny_settings(widget, tmp_path / "m.pt")
    widget.choose_layers(layers["BF"].name, stranger.name)
    assert widget.start() is None
    assert "share no cell id" in widget.last_message
    # DAPI is optional with strategy "none", but required otherwise
    widget.choose_layers(layers["BF"].name, None)
    widget.settings.dapi_strategy_combo.setCurrentText("substitute")
    assert widget.start() is None
    assert "needs a DAPI layer" in widget.last_message


def test_too_few_annotated_cells_are_refused(viewer_widget, tmp_path) -> None:
    viewer, widget, layers = viewer_widget
    meta = deparray_meta(layers["BF"])
    ctc = [
        cid for cid, label in zip(meta["cell_ids"], meta["labels"], strict=True) if label == "CTC"
    ]
    for cell_id in ctc[1:]:  # one CTC left
        set_cell_label(viewer.layers, cell_id, None)
    _tiny_settings(widget, tmp_path / "m.pt")
    assert widget.start() is None
    assert not widget.is_running
    message = widget.last_message
    assert "too few CTC" in message and "1 CTC, 10 WBC, 9 unlabelled" in message
    assert not (tmp_path / "m.pt").exists()


def test_counts_follow_key_annotations(viewer_widget) -> None:
    viewer, widget, layers = viewer_widget
    viewer.layers.selection.active = layers["BF"]
    viewer.dims.set_current_step(0, 0)
    widget.session.annotate_current(None)
    assert "1 unlabelled" in widget.cells.counts_label.text()


# ------------------------------------------------------------------ wiring (core train patched)


class _FakeModel:
    def __init__(self, metrics: dict) -> None:
        self.metadata = {"arch": "resnet18", "threshold": 0.4, "metrics": metrics}


class _FakeResult:
    def __init__(self, out: str | None, cancelled: bool, history: list[dict]) -> None:
        from napari_deparray_ctc.core.evaluation.metrics import confusion

        self.out_path = out
        self.cancelled = cancelled
        self.history = history
        self.warning = None
        self.metrics = {
            "precision": 0.8,
            "recall": 0.75,
            "f1": 0.77,
            "threshold": 0.4,
            # the form core.metrics returns (a dict), which the widget must show as a table
            "confusion_matrix": confusion([0] * 10 + [1] * 8, [0] * 9 + [1] + [0] * 2 + [1] * 6),
        }
        self.model = _FakeModel(self.metrics)


def _fake_train(batches_per_epoch: int = 5, batch_s: float = 0.01, started=None, hold=False):
    """A stand-in for core ``train`` that reports progress and honours should_stop.

    With ``hold``, it waits for ``started`` to be set (by the test) before it begins.
    """
    from napari_deparray_ctc.core.training.train import TrainProgress

    def train(config, data=None, progress=None, should_stop=None):
        history = []
        if started is not None:
            if hold:
                assert started.wait(30)
            else:
                started.set()
        for epoch in range(1, config.epochs + 1):
            for b in range(1, batches_per_epoch + 1):
                if should_stop():
                    Path(config.out).write_bytes(b"best so far")
                    return _FakeResult(config.out, True, history)
                time.sleep(batch_s)
                progress(
                    TrainProgress(epoch, config.epochs, b, batches_per_epoch, "batch", 1.0 / epoch)
                )
            record = {
                "epoch": epoch,
                "train_loss": 1.0 / epoch,
                "val_loss": 1.2 / epoch,
                "val_f1": 0.5 + 0.1 * epoch,
            }
            history.append(record)
            progress(
                TrainProgress(
                    epoch,
                    config.epochs,
                    batches_per_epoch,
                    batches_per_epoch,
                    "epoch_end",
                    record["train_loss"],
                    record["val_loss"],
                    record["val_f1"],
                    record["val_f1"],
                    eta_s=1.0,
                )
            )
        Path(config.out).write_bytes(b"model")
        return _FakeResult(config.out, False, history)

    return train


def test_plot_and_progress_receive_points(viewer_widget, qtbot, tmp_path, monkeypatch) -> None:
    _viewer, widget, _layers = viewer_widget
    out = tmp_path / "m.pt"
    _tiny_settings(widget, out, epochs=3)
    seen = []
    started = threading.Event()
    monkeypatch.setattr(
        "napari_deparray_ctc.core.training.train.train", _fake_train(started=started, hold=True)
    )
    worker = widget.start()
    assert worker is not None and widget.is_running
    assert not widget.train_button.isEnabled() and widget.stop_button.isEnabled()
    worker.progress.connect(seen.append)
    started.set()
    _wait(qtbot, widget)
    assert [p.epoch for p in widget.plot.points] == [1, 2, 3]
    assert widget.plot.points[-1].val_f1 == pytest.approx(0.8)
    assert any(p.phase == "epoch_end" for p in seen)
    assert widget.progress.value() == widget.progress.maximum()
    assert out.read_bytes() == b"model" and not in_progress_path(out).exists()
    text = widget.metrics_label.text()
    assert "F1 0.770" in text and "true CTC" in text  # the confusion matrix is shown
    assert "<td align='right'>9</td><td align='right'>1</td>" in text
    assert widget.use_button.isEnabled() and widget.train_button.isEnabled()


def test_stop_cancels_within_a_batch(viewer_widget, qtbot, tmp_path, monkeypatch) -> None:
    _viewer, widget, _layers = viewer_widget
    out = tmp_path / "m.pt"
    _tiny_settings(widget, out, epochs=50)
    started = threading.Event()
    fake = _fake_train(batches_per_epoch=100, batch_s=0.05, started=started)
    monkeypatch.setattr("napari_deparray_ctc.core.training.train.train", fake)
    widget.start()
    assert started.wait(30)
    qtbot.wait(200)
    t0 = time.perf_counter()
    widget.stop()
    _wait(qtbot, widget)
    assert time.perf_counter() - t0 < 5.0  # one batch is 50 ms; the full run would take 250 s
    assert widget.last_outcome.result.cancelled
    assert out.read_bytes() == b"best so far"
    assert widget.last_message.startswith("Stopped")


def test_training_errors_are_reported_and_the_widget_recovers(
    viewer_widget, qtbot, tmp_path, monkeypatch
):
    _viewer, widget, _layers = viewer_widget
    _tiny_settings(widget, tmp_path / "m.pt")

    def broken(config, data=None, progress=None, should_stop=None):
        raise RuntimeError("out of memory on the pretend device")

    monkeypatch.setattr("napari_deparray_ctc.core.training.train.train", broken)
    widget.start()
    _wait(qtbot, widget)
    assert "out of memory on the pretend device" in widget.last_message
    assert widget.train_button.isEnabled() and not widget.use_button.isEnabled()


# ------------------------------------------------------------------ real training


def _save_reference_model(path: Path, f1: float, val_loss: float) -> None:
    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    metrics = {"f1": f1, "val_loss": val_loss}
    save_model(
        path,
        build_network("resnet18"),
        {"arch": "resnet18", "threshold": 0.5, "image_size": 32, "metrics": metrics},
    )


def test_real_tiny_training_gives_a_model_the_classify_widget_uses(
    viewer_widget, qtbot, tmp_path
) -> None:
    from napari_deparray_ctc.core.model.loaded import load_model

    viewer, widget, _layers = viewer_widget
    out = tmp_path / "model.pt"
    _tiny_settings(widget, out, epochs=2)
    widget.settings.dapi_strategy_combo.setCurrentText("substitute")
    assert widget.start() is not None
    _wait(qtbot, widget)
    assert widget.last_outcome is not None, widget.last_message
    model = load_model(out, device="cpu")
    assert model.arch == "resnet18" and model.image_size == 32
    assert model.metadata["train_config"]["dapi_strategy"] == "substitute"
    # one point per epoch, plus the untrained starting point (epoch 0) when core reports it
    assert 1 <= len([p for p in widget.plot.points if p.epoch >= 1]) <= 2
    assert "precision" in widget.metrics_label.text()

    classify = widget.use_model()  # docks "Classify cells" and hands it the model
    assert classify is not None and classify.model_path == str(out)
    assert session_for(viewer).model_path == str(out)
    qtbot.waitUntil(lambda: not classify.model_box.is_checking, timeout=WAIT_MS)
    classify.choose_layers([widget.cells.bf_combo.currentText()])
    worker = classify.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not classify.is_running, timeout=WAIT_MS)
    predictions = deparray_meta(viewer.layers[widget.cells.bf_combo.currentText()])["predictions"]
    assert len(predictions) == 20
    assert all(0.0 <= p["p_ctc"] <= 1.0 for p in predictions)


def test_stop_keeps_a_better_previous_model_intact(viewer_widget, qtbot, tmp_path) -> None:
    _viewer, widget, _layers = viewer_widget
    out = tmp_path / "model.pt"
    _save_reference_model(out, f1=1.0, val_loss=0.0)  # nothing can beat it
    previous = out.read_bytes()
    _tiny_settings(widget, out, epochs=20)
    widget.settings.dapi_strategy_combo.setCurrentText("none")
    worker = widget.start()
    assert worker is not None
    worker.progress.connect(lambda p: widget.stop())  # Stop at the first progress event
    _wait(qtbot, widget)
    outcome = widget.last_outcome
    assert outcome is not None, widget.last_message
    assert outcome.result.cancelled
    assert out.read_bytes() == previous  # byte for byte
    assert outcome.model_path is not None and outcome.model_path != out
    assert outcome.model_path.parent == tmp_path and outcome.model_path.exists()
    assert "was kept" in widget.last_message and outcome.model_path.name in widget.last_message
    assert not in_progress_path(out).exists()
    assert len([r for r in outcome.result.history if r["epoch"] >= 1]) <= 1  # + epoch 0 (untrained)


# ------------------------------------------------------------------ demo --gui


def test_demo_gui_opens_the_export_with_both_widgets(make_napari_viewer, tmp_path) -> None:
    from napari_deparray_ctc.napari.demo_gui import setup_demo

    viewer = make_napari_viewer()
    session = setup_demo(viewer, tmp_path / "demo", n_cells=12, image_size=32)
    assert {deparray_meta(layer)["channel"] for layer in session.layers} >= {"BF", "DAPI"}
    assert len(deparray_meta(session.layers[0])["cell_ids"]) == 12
    assert isinstance(session.train_widget, TrainWidget)
    assert session.classify_widget.session is session_for(viewer)
    assert session.train_widget.settings.out_edit.text() == str(session.folder / "model.pt")
    assert session.train_widget.cells.bf_combo.currentText() == viewer.layers.selection.active.name
    assert "CTC" in session.train_widget.cells.counts_label.text()  # labels came with the export
    with pytest.raises(FileExistsError):
        setup_demo(viewer, session.folder)  # never writes into a folder that holds files


# ------------------------------------------------------------------ what the analyst sees


def test_every_setting_explains_itself(viewer_widget) -> None:
    _viewer, widget, _layers = viewer_widget
    controls = [
        widget.settings.arch_combo,
        widget.settings.epochs_spin,
        widget.settings.size_spin,
        *widget.settings.augment_checks.values(),
        widget.settings.dapi_strategy_combo,
        widget.settings.val_spin,
        widget.settings.seed_spin,
        widget.settings.morphology_check,
        widget.settings.out_edit,
        widget.settings.overwrite_check,
        widget.settings.start_from_check,
        widget.train_button,
        widget.stop_button,
        widget.cells.bf_combo,
        widget.cells.dapi_combo,
    ]
    for control in controls:
        assert control.toolTip().strip(), control
    tip = widget.settings.dapi_strategy_combo.toolTip()
    for strategy in ("substitute", "blend", "aux_nucleus"):
        assert strategy in tip  # each strategy is explained


def test_the_shape_features_switch_reaches_the_training_config(viewer_widget) -> None:
    _viewer, widget, _layers = viewer_widget
    check = widget.settings.morphology_check
    assert check.isChecked() == TrainConfig().morphology  # the default comes from TrainConfig
    check.setChecked(True)
    assert widget.inputs().to_config().morphology is True
    check.setChecked(False)
    assert widget.inputs().to_config().morphology is False


def test_eta_counts_from_the_first_batch(viewer_widget, monkeypatch) -> None:
    """Set-up time (model building, tensor preparation) must not inflate the first ETA."""
    from napari_deparray_ctc.core.training.train import TrainProgress

    _viewer, widget, _layers = viewer_widget
    clock = iter([100.0, 101.0, 102.0])  # first batch at 100 s, then one batch per second
    monkeypatch.setattr(
        "napari_deparray_ctc.napari.train_run.time.perf_counter", lambda: next(clock)
    )
    for batch in (1, 2, 3):
        widget.run._on_progress(TrainProgress(1, 2, batch, 10, "batch", 0.5))
    # 3 of 20 batches done, 1 s per batch since the first: 17 s left
    assert widget.progress.format().endswith("ETA 0:17")
