"""The owner of a viewer's training runs: annotated layers in, a model file out.

:class:`TrainRun` checks the inputs, assembles the training set from the annotated BF (and
DAPI) layers with core's one assembler, runs
:class:`~napari_deparray_ctc.napari.workers.TrainWorker` (which applies core's model-file
policy) through the viewer's :class:`~napari_deparray_ctc.napari.runs.BackgroundRuns`, and
reports through its events. The *Train classifier* widget only forwards the buttons and
follows the events. Closing the window stops the run as *Stop* does: the best model so far
is kept.

Events (``run.events``):

``started(inputs, n_cells)``, ``stage(text)``
    when it starts;
``progress(report, done, total, eta_s)``
    a ``core`` ``TrainProgress`` with the overall batch count and the remaining seconds;
``finished(outcome, message, error, notify)``
    once at the end; ``notify`` True when the result is not what was asked for (stopped,
    a better model kept, a warning) and deserves a pop-up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from napari_deparray_ctc.napari.cells import cells_for_training
from napari_deparray_ctc.napari.runs import RunOwner
from napari_deparray_ctc.napari.widgets.train.texts import format_seconds
from napari_deparray_ctc.napari.workers import TrainJob, TrainWorker

__all__ = ["TrainRun"]

LOG = logging.getLogger(__name__)


class TrainRun(RunOwner):
    """The training runs of one viewer (one at a time; see :class:`RunOwner`)."""

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self._timing: tuple[float, int] | None = None

    # -- the inputs -----------------------------------------------------------------------

    def starting_point(self, inputs: Any) -> Any:
        """Fine-tuning takes the network and input size of the model it starts from (the
        viewer's chosen model); ``ValueError`` says why it cannot."""
        from napari_deparray_ctc.core.training.train import fine_tuning_settings

        model = self.session.model
        if not model.path:
            raise ValueError(
                "'Start from the current model': choose a model in 'Classify cells' first."
            )
        if model.metadata is None:
            raise ValueError(
                model.problem or "'Start from the current model': it is still being read."
            )
        values = fine_tuning_settings(model.metadata, model.path)
        return dataclasses.replace(
            inputs,
            arch=values.get("arch", inputs.arch),
            image_size=int(values["image_size"]),
            init_from=values["pretrained"],
        )

    def prepare(self, inputs: Any, pairing: Any) -> Any:
        """The training set of ``pairing``'s annotated cells (``ValueError``: why not)."""
        from napari_deparray_ctc.core.errors import TrainingDataError
        from napari_deparray_ctc.core.training import check_training_set, training_set_from_cells
        from napari_deparray_ctc.core.training.train import config_field_defaults

        error = inputs.validation_error()
        if error:
            raise ValueError(error)
        name = pairing.bf_layer.name
        if inputs.dapi_strategy != "none" and pairing.n_paired == 0:
            raise ValueError(
                f"DAPI strategy {inputs.dapi_strategy!r} needs DAPI images, but no cell of "
                f"{name!r} has a DAPI partner; choose the DAPI layer or set the strategy to "
                "'none'."
            )
        cells, n_unlabelled = cells_for_training(pairing)
        n_ctc = sum(c.label == "CTC" for c in cells)
        counts = f"({n_ctc} CTC, {len(cells) - n_ctc} WBC, {n_unlabelled} unlabelled)"
        if not cells:
            raise ValueError(
                f"No annotated cell in {name!r} {counts}: annotate cells with c (CTC) and w "
                "(WBC) first."
            )
        if inputs.dapi_strategy != "none" and not any("DAPI" in c.channels for c in cells):
            raise ValueError(
                f"DAPI strategy {inputs.dapi_strategy!r}: none of the annotated cells has a DAPI "
                "image; choose the DAPI layer or set the strategy to 'none'."
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                data = training_set_from_cells(cells)
                check_training_set(data, min_per_class=config_field_defaults()["min_per_class"])
        except TrainingDataError as exc:
            raise ValueError(
                f"Cannot train on {name!r} {counts}: {exc.reason}. Annotate more cells with c "
                "(CTC) and w (WBC)."
            ) from None
        return data

    # -- running --------------------------------------------------------------------------

    def start(
        self, inputs: Any, pairing: Any, start_from_model: bool = False
    ) -> TrainWorker | None:
        """Check, assemble and train in the background (``None``: refused; ``finished`` says
        why)."""
        if self.is_running or self.session.runs.closed:
            return None
        try:
            if start_from_model:
                inputs = self.starting_point(inputs)
            data = self.prepare(inputs, pairing)
        except ValueError as exc:
            self.events.finished(outcome=None, message=str(exc), error=True, notify=True)
            return None
        out = Path(inputs.out).expanduser()
        worker = TrainWorker(TrainJob(inputs.to_config(), data, out, inputs.overwrite_if_worse))
        # set up before the worker starts (opening the activity bar may process its reports)
        self.worker = worker
        self.last_outcome = None
        self._timing = None
        self.events.started(inputs=inputs, n_cells=len(data))
        self._open_activity(0, "Training classifier: starting")
        self._start_worker(worker, f"training a classifier on {len(data)} cells")
        return worker

    def stop(self) -> None:
        """Stop after the current batch; the best model so far is kept."""
        if self.worker is not None:
            self.worker.stop()

    def _eta(self, done: int, total: int) -> float | None:
        """Remaining seconds from the pace since the first report (set-up time excluded)."""
        now = time.perf_counter()
        if self._timing is None:
            self._timing = (now, done)
            return None
        start, first = self._timing
        if done <= first:
            return None
        return (now - start) / (done - first) * (total - done)

    def _on_progress(self, report: Any) -> None:
        done, total = _overall_steps(report)
        eta = self._eta(done, total)
        # listeners first: napari's activity bar may process Qt events (later reports) below
        self.events.progress(report=report, done=done, total=total, eta_s=eta)
        bar = self.activity
        if bar is not None:
            with contextlib.suppress(Exception):  # the activity dock only mirrors the widget
                bar.total = total
                bar.set_description(f"Training classifier: ETA {format_seconds(eta)}")
                if done > bar.n:
                    bar.update(done - bar.n)

    def _on_returned(self, outcome: Any) -> None:
        if outcome.error is not None:
            self.events.finished(outcome=outcome, message=outcome.error, error=True, notify=True)
            return
        self.last_outcome = outcome
        result = outcome.result
        kept = outcome.destination is not None and outcome.destination.kept_previous
        notify = bool(result.cancelled or kept or getattr(result, "warning", None))
        self.events.finished(outcome=outcome, message=outcome.message, error=False, notify=notify)

    def _on_errored(self, exc: BaseException) -> None:
        LOG.error("training failed", exc_info=exc)
        text = " ".join(str(exc).split()) or "an unexpected problem"
        self.events.finished(
            outcome=None, message=f"Training failed: {text}.", error=True, notify=True
        )


def _overall_steps(report: Any) -> tuple[int, int]:
    """``(done, total)`` batches over every fold of the run, from a ``TrainProgress``."""
    steps = getattr(report, "steps", None)
    if steps:  # core counts the batches of every fold together
        done = steps if report.phase == "done" else getattr(report, "step", None) or 0
        return int(min(done, steps)), int(steps)
    batches = max(1, report.batches)
    folds = max(1, report.folds or 1)
    fold = max(1, report.fold or 1)
    per_fold = max(1, report.epochs * batches)
    total = folds * per_fold
    if report.phase == "done":
        return total, total
    done = (fold - 1) * per_fold + min(per_fold, (report.epoch - 1) * batches + report.batch)
    return int(done), int(total)
