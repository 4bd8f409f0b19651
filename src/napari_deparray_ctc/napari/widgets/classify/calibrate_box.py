"""The "Calibrate to this instrument" box of "Classify cells".

When the cells on screen look unlike the model's training cells (the shift check), the box
says that the calls, counts and intervals are *not calibrated for this instrument*, and offers
the way out: *Suggest cells to confirm* puts the cells that best inform a calibration first in
the table and the gallery; the user confirms them with ``c`` / ``w``; *Calibrate* refits the
model's calibration and threshold from them (the session's ``CalibrateRun``), saves a site
model beside the original, and re-classifies with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

# the mark on calls made on an instrument unlike the model's training instrument: one text
# for the widget, the CSVs and the report
from napari_deparray_ctc.core.inference.counts import NOT_CALIBRATED
from napari_deparray_ctc.napari.follow import Follows
from napari_deparray_ctc.napari.widgets.common import notify

__all__ = ["NOT_CALIBRATED", "SUGGESTED_FOR_CALIBRATION", "CalibrateBox"]

#: how many cells the box suggests to confirm
SUGGESTED_FOR_CALIBRATION = 20
#: the note while neither a shift warning nor a site model says more
GENERIC_NOTE = (
    "Calibrated calls need a model calibrated for this instrument. Confirm about 20 "
    "suggested cells with c (CTC) / w (WBC), then Calibrate."
)


class CalibrateBox(QWidget):
    """Site calibration controls (see the module docstring).

    Parameters
    ----------
    session
        The viewer's session.
    layer_names
        Returns the layers the classify widget's "Cells" choice names.
    rerun
        Classifies the chosen cells again (the classify widget's ``run``).
    """

    def __init__(
        self,
        session: Any,
        layer_names: Callable[[], Any],
        rerun: Callable[[], Any],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.run = session.calibrate
        self.layer_names = layer_names
        self.rerun = rerun
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.note = QLabel(GENERIC_NOTE)
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        buttons = QHBoxLayout()
        self.suggest_button = QPushButton("Suggest cells to confirm")
        self.suggest_button.setToolTip(
            f"The {SUGGESTED_FOR_CALIBRATION} cells that best inform a calibration (both "
            "calls, across the scores), first in the table and the gallery: confirm each "
            "with c or w"
        )
        self.calibrate_button = QPushButton("Calibrate")
        self.calibrate_button.setToolTip(
            "Refit the model's calibration and threshold for this instrument from the "
            "confirmed cells, save a site model beside the original, and classify again"
        )
        buttons.addWidget(self.suggest_button)
        buttons.addWidget(self.calibrate_button)
        layout.addLayout(buttons)
        self.counts = QLabel("")
        self.counts.setWordWrap(True)
        layout.addWidget(self.counts)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.suggest_button.clicked.connect(self.suggest)
        self.calibrate_button.clicked.connect(self.calibrate)
        self._followed = Follows(
            (session.events.results, self.update),
            (session.events.annotation, self.update),
            (session.model.events.checked, self.update),  # a remembered site model says so
            (self.run.events.started, self._on_started),
            (self.run.events.finished, self._on_finished),
        )
        self.update()

    def close_box(self) -> None:
        """Stop following the session (the dock is closing)."""
        self._followed.close()

    def layer(self) -> Any | None:
        """The BF layer of the "Cells" choice (``None`` when none)."""
        names = self.layer_names()
        viewer = self.session.viewer
        if not names or viewer is None or names[0] not in viewer.layers:
            return None
        return viewer.layers[names[0]]

    def update(self, *_: Any) -> None:
        """Say whether the calls are calibrated for these cells, and what is confirmed."""
        results = self.session.results
        warning = getattr(results, "calibration_warning", None)
        site = (self.session.model.metadata or {}).get("site_profile")
        if warning and not site:
            self.note.setText(
                f"<b>{NOT_CALIBRATED}</b>: these cells look unlike the model's training "
                "cells, so its calls, counts and intervals may be far off. Confirm about 20 "
                "suggested cells with c / w, then Calibrate."
            )
        elif site:
            self.note.setText(
                f"The model is calibrated for '{site.get('data_name') or 'a site'}' "
                f"({(site.get('n_labelled') or {}).get('CTC', '?')} CTC + "
                f"{(site.get('n_labelled') or {}).get('WBC', '?')} WBC confirmed cells)."
            )
        else:
            self.note.setText(GENERIC_NOTE)
        layer = self.layer()
        if layer is not None:
            counts = self.run.label_counts(layer)
            self.counts.setText(
                f"Confirmed in this export: {counts['CTC']} CTC, {counts['WBC']} WBC "
                "(at least 5 of each are needed; 10–20 of each are better)."
            )

    def suggest(self) -> Any | None:
        """Put the cells that best inform a calibration first (``None``: refused, with why)."""
        layer, model = self.layer(), self.session.model
        if layer is None or not model.path or model.problem:
            notify("error", "Suggest cells to confirm: choose a usable model and the cells first.")
            return None
        self.suggest_button.setEnabled(False)
        self.status.setText("Looking for the cells that best inform a calibration…")
        return self.session.start_suggestion(
            layer,
            SUGGESTED_FOR_CALIBRATION,
            "calibration",
            "suggesting cells for a calibration",
            returned=self._on_suggested,
            errored=lambda exc: self._fail(f"Suggesting cells failed: {exc}"),
            finished=self._on_suggest_finished,
        )

    def _on_suggested(self, ids: list[str]) -> None:
        if not ids:
            self.status.setText("Every cell is confirmed already: click Calibrate.")
            return
        self.session.suggest(ids)
        self.status.setText(
            f"{len(ids)} cells to confirm are first in the table and the gallery, the first "
            "on screen: press c (CTC) or w (WBC) on each (the next one then comes on screen), "
            "then Calibrate."
        )

    def _on_suggest_finished(self) -> None:
        self.suggest_button.setEnabled(True)

    def calibrate(self) -> Any | None:
        """Calibrate to this instrument, then classify again (``None``: refused, with why)."""
        return self.run.start(self.layer())

    def _on_started(self, event: Any) -> None:
        self.calibrate_button.setEnabled(False)
        self.status.setText(f"Calibrating from {event.n_labelled} confirmed cells…")

    def _on_finished(self, event: Any) -> None:
        self.calibrate_button.setEnabled(True)
        if event.error:
            self._fail(event.message)
            return
        self.status.setText(event.message)
        notify("info", event.message)
        if event.outcome is not None and not event.outcome.cancelled:
            self.rerun()  # the cells called again with the site model

    def _fail(self, message: str) -> None:
        self.status.setText(message)
        notify("error", message)
