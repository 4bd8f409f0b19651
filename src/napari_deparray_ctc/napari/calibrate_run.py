"""The owner of a viewer's site calibrations: the chosen model, made fit for this instrument.

A model's probability calibration and threshold come from its training instrument; on another
instrument (another hospital, a serviced microscope) they do not hold, even when the ranking
does. :class:`CalibrateRun` refits them from a few cells the user confirmed with ``c``/``w``
in the export on screen (``core.inference.site_calibration``), in a background worker, saves
the site model beside the original (never over it) and makes it the viewer's model. The
*Calibrate to this instrument* box of *Classify cells* forwards to it and re-classifies.

Events (``run.events``): ``started(n_labelled)``, ``finished(outcome, message, error)``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from napari_deparray_ctc.napari.cells import cell_count
from napari_deparray_ctc.napari.layer_info import LayerInfo
from napari_deparray_ctc.napari.runs import RunOwner
from napari_deparray_ctc.napari.workers import LayerCells, calibrate_job

__all__ = ["CalibrateRun", "site_name"]

LOG = logging.getLogger(__name__)


def site_name(layer: Any) -> str:
    """The export a layer shows, as the site's name (``"run7 :: BF"`` → ``"run7"``)."""
    return str(layer.name).split(" :: ")[0]


class CalibrateRun(RunOwner):
    """Site calibrations of one viewer (one at a time; see :class:`RunOwner`)."""

    EVENTS = ("started", "finished")

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self._stop = threading.Event()

    def label_counts(self, layer: Any) -> dict[str, int]:
        """``{"CTC", "WBC", "unlabelled"}`` among the cells of ``layer``."""
        from napari_deparray_ctc.core.inference.site_calibration import site_label_counts

        return site_label_counts(LayerInfo.of(layer).labels)

    def refusal(self, layer: Any | None) -> str | None:
        """Why the calibration cannot run now, in words (``None``: it can)."""
        from napari_deparray_ctc.core.inference.site_calibration import (
            SiteCalibrationError,
            check_site_labels,
        )

        model = self.session.model
        if not model.path:
            return "Calibrate: choose the model to calibrate under 'Model' first."
        if model.problem:
            return model.problem
        if layer is None:
            return "Calibrate: choose the cells of this instrument under 'Cells' first."
        try:
            check_site_labels(LayerInfo.of(layer).labels, where=f"'{site_name(layer)}'")
        except SiteCalibrationError as exc:
            return f"Calibrate: {exc.reason}."
        return None

    def start(self, layer: Any | None) -> Any | None:
        """Calibrate the chosen model on ``layer``'s labelled cells, in the background
        (``None``: refused; ``events.finished`` says why)."""
        if self.is_running or self.session.runs.closed:
            return None
        error = self.refusal(layer)
        if error is not None:
            self.events.finished(outcome=None, message=error, error=True)
            return None
        info = LayerInfo.of(layer)
        n = cell_count(layer)
        cells = LayerCells(layer.name, layer.data, False, list(range(n)), info.cell_ids)
        counts = self.label_counts(layer)
        self._stop.clear()
        runs = self.session.runs
        worker = runs.function_worker(
            calibrate_job,
            self.session.model.path,
            cells,
            info.labels,
            info.pixel_size_um,
            site_name(layer),
            self._stop.is_set,
        )
        self.worker = worker
        self.events.started(n_labelled=counts["CTC"] + counts["WBC"])
        runs.start(
            worker,
            f"calibrating the model to '{site_name(layer)}'",
            stop=self._stop.set,
            returned=lambda outcome, c=counts: self._on_returned(outcome, c),
            errored=self._on_errored,
            finished=self._on_finished,
        )
        return worker

    def _on_returned(self, outcome: Any, counts: dict[str, int]) -> None:
        if outcome.cancelled:
            self.events.finished(outcome=outcome, message="Calibration stopped.", error=False)
            return
        profile = outcome.metadata.get("site_profile") or {}
        warning = profile.get("warning") or outcome.metadata.get("site_warning")
        chosen = self.session.model_path
        self.session.model_path = str(outcome.site_model)
        started = outcome.started_from
        again = (
            f", starting again from {Path(started).name}, the model that site model came from"
            if started and chosen and Path(started) != Path(chosen)
            else ""
        )
        message = (
            f"Calibrated to this instrument from {counts['CTC']} CTC + {counts['WBC']} WBC "
            f"confirmed cells{again}; the site model is {outcome.site_model} (the original "
            "model is unchanged)."
        )
        if warning:
            message += f" {warning}"
        self.events.finished(outcome=outcome, message=message, error=False)

    def _on_errored(self, exc: BaseException) -> None:
        reason = getattr(exc, "reason", None) or " ".join(str(exc).split())
        LOG.info("calibration failed: %s", reason)
        self.events.finished(
            outcome=None,
            message=f"Calibration failed: {reason or 'an unexpected problem'}.",
            error=True,
        )
