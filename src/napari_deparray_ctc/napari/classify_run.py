"""The owner of a viewer's classification runs: inputs in, results in the layers and session.

:class:`ClassifyRun` takes what the user chose (the layers, the model, the options), checks it,
builds the Qt-free job, runs :class:`~napari_deparray_ctc.napari.workers.ClassifyWorker`
through the viewer's :class:`~napari_deparray_ctc.napari.runs.BackgroundRuns`, writes the
predictions into the layers and the results into the session, and says what happened through
its events. The *Classify cells* widget only forwards the button and follows the events; the
run goes on, and its results land, even if the widget is closed meanwhile.

Events (``run.events``):

``started(total)``, ``stage(text)``, ``progress(done, total)``
    while it runs;
``finished(outcome, message, error)``
    once at the end: ``message`` in words; ``error`` True when it failed or was refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from napari_deparray_ctc.core.constants import background_threads
from napari_deparray_ctc.napari.cells import cell_count, ensure_deparray_metadata
from napari_deparray_ctc.napari.layer_info import LayerInfo
from napari_deparray_ctc.napari.results import CellResult, ClassificationResults
from napari_deparray_ctc.napari.runs import RunOwner
from napari_deparray_ctc.napari.workers import ClassifyJob, ClassifyWorker, LayerCells

__all__ = ["NO_MODEL_GUIDANCE", "ClassifyRun"]

LOG = logging.getLogger(__name__)

#: what to do when no model is chosen yet (the first run of a new user)
NO_MODEL_GUIDANCE = (
    "No classifier yet. Choose a model file (.pt) under 'Model', or make one: annotate a few "
    "cells (select the BF layer, press c for CTC and w for WBC on the cell on screen), then "
    "train in 'Train classifier'."
)


class ClassifyRun(RunOwner):
    """The classification runs of one viewer (one at a time; see :class:`RunOwner`)."""

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self._layers: dict[str, Any] = {}
        self._model_path = ""

    @property
    def layers(self) -> dict[str, Any]:
        """The layers of the last run started, by name."""
        return dict(self._layers)

    # -- starting -------------------------------------------------------------------------

    def refusal(self, inputs: Any, layers_lacking_bf: str | None) -> str | None:
        """Why ``inputs`` cannot run now, in words (``None``: they can)."""
        viewer = self.session.viewer
        names = [layer.name for layer in viewer.layers] if viewer is not None else []
        if not str(inputs.model_path).strip():
            return NO_MODEL_GUIDANCE
        error = inputs.validation_error(names)
        if inputs.layer_names is None and layers_lacking_bf:
            return layers_lacking_bf  # an export opened without BF: say so
        if error is None and self.session.model.path == inputs.model_path:
            error = self.session.model.problem
        return error

    def start(
        self,
        inputs: Any,
        *,
        adapt: bool = False,
        layers_lacking_bf: str | None = None,
    ) -> ClassifyWorker | None:
        """Classify the chosen layers in the background.

        Parameters
        ----------
        inputs
            :class:`~napari_deparray_ctc.napari.widgets.classify.inputs.ClassifyInputs`.
        adapt
            Re-estimate BatchNorm statistics on these cells first (``core.classify``).
        layers_lacking_bf
            The sentence to say when no layer is chosen because the export lacks BF.

        Returns
        -------
        The started worker, or ``None`` when refused (``events.finished`` says why).
        """
        if self.is_running or self.session.runs.closed:
            return None
        error = self.refusal(inputs, layers_lacking_bf)
        if error is not None:
            self.events.finished(outcome=None, message=error, error=True)
            return None
        viewer = self.session.viewer
        layers = [viewer.layers[name] for name in inputs.layer_names]
        job = self._job(inputs, layers, adapt)
        worker = ClassifyWorker(job)
        self._layers = {layer.name: layer for layer in layers}
        self._model_path = inputs.model_path
        # everything a listener needs is set before the worker starts: opening the activity
        # bar may process Qt events, and a quick worker's reports with them
        self.worker = worker
        self.events.started(total=job.n_cells)
        self._open_activity(job.n_cells, "Classifying cells")
        self._start_worker(worker, f"classifying {job.n_cells} cells")
        return worker

    def cancel(self) -> None:
        """Stop after the current batch; nothing is stored."""
        if self.worker is not None:
            self.worker.stop()

    def _job(self, inputs: Any, layers: list[Any], adapt: bool) -> ClassifyJob:
        job = ClassifyJob(
            str(Path(inputs.model_path).expanduser()),
            [],
            batch_size=inputs.batch_size,
            device=inputs.device,
            num_threads=background_threads(),
        )
        sizes = {LayerInfo.of(layer).pixel_size_um for layer in layers}
        if len(sizes) == 1 and None not in sizes:
            job.options["pixel_size"] = sizes.pop()  # the export declares it
        if adapt:
            job.options["adapt"] = True
        for layer in layers:
            ensure_deparray_metadata(layer, "BF")
            info = LayerInfo.of(layer)
            job.layers.append(
                LayerCells(
                    layer.name,
                    layer.data,
                    bool(getattr(layer, "rgb", False)),
                    list(range(cell_count(layer))),
                    info.cell_ids,
                )
            )
        return job

    # -- following ------------------------------------------------------------------------

    # napari's activity bar may process Qt events when it changes (and with them the worker's
    # later reports): the run's own listeners are told first, the activity bar last

    def _on_stage(self, text: str) -> None:
        self.events.stage(text=text)
        if self.activity is not None:
            self.activity.set_description(f"Classifying cells: {text}")

    def _on_progress(self, done: int, total: int) -> None:
        self.events.progress(done=done, total=total)
        if self.activity is not None and done > self.activity.n:
            self.activity.update(done - self.activity.n)

    def _on_errored(self, exc: BaseException) -> None:
        LOG.error("classification failed", exc_info=exc)
        self.events.finished(
            outcome=None,
            message="Classification stopped because of an unexpected problem; the details "
            "are in napari's console log.",
            error=True,
        )

    def _on_returned(self, outcome: Any) -> None:
        self.last_outcome = outcome
        if outcome.error is not None:
            self.events.finished(outcome=outcome, message=outcome.error, error=True)
            return
        if outcome.cancelled:
            total = sum(cell_count(layer) for layer in self._layers.values())
            previous = "; the table still shows the previous run." if self.session.results else "."
            self.events.finished(
                outcome=outcome,
                message=f"Cancelled after {outcome.done} of {total} cells: nothing was stored"
                + previous,
                error=False,
            )
            return
        results = self.accept(outcome)
        n = len(results.rows)
        message = f"Classified {n} cell{'s' if n != 1 else ''} in {outcome.seconds:.1f} s."
        for note in outcome.notes:
            message += f" {note}"
        self.events.finished(outcome=outcome, message=message, error=False)

    # -- results --------------------------------------------------------------------------

    def accept(self, outcome: Any) -> ClassificationResults:
        """The outcome's calls as the session's results, stored in the classified layers."""
        rows, p = [], iter(outcome.p_ctc)
        for name, layer in self._layers.items():
            info = LayerInfo.of(layer)
            # each list read once (``info.label_of(i)`` copies the whole list per cell)
            paths, labels, groups = info.paths, info.labels, info.groups
            for index, cell_id in enumerate(info.cell_ids):
                rows.append(
                    CellResult(
                        cell_id,
                        name,
                        index,
                        float(next(p)),
                        _item(paths, index),
                        _item(labels, index),
                        _item(groups, index),
                    )
                )
        threshold = float(outcome.model_threshold)
        results = ClassificationResults(
            rows, threshold, threshold, self._model_path, outcome.model_metadata
        )
        results.calibration_warning = getattr(outcome, "shift_warning", None)
        self.store_predictions(results)
        self.session.results = results
        return results

    def store_predictions(self, results: ClassificationResults) -> None:
        """Each classified layer's P(CTC) and threshold, in its layer info."""
        for name, layer in self._layers.items():
            predictions = results.predictions_for_layer(name, cell_count(layer))
            info = LayerInfo.of(layer)
            if info.present and predictions is not None:
                info.set_predictions(
                    predictions, results.threshold, results.model_path, results.calibration
                )

    def layer_of_row(self, results: ClassificationResults, row: int) -> Any | None:
        """The layer of a result row, if it is still in the viewer."""
        layer = self._layers.get(results.rows[row].layer)
        viewer = self.session.viewer
        return layer if viewer is not None and layer in viewer.layers else None


def _item(values: list[Any], index: int) -> Any:
    """``values[index]``, ``None`` past its end (as ``LayerInfo.path_of`` and its kin)."""
    return values[index] if 0 <= index < len(values) else None
