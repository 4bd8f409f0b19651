"""A small live plot of training loss and validation F1 per epoch (QPainter, no matplotlib).

Two series share the x axis (epoch): losses on the left axis (scaled to their range) and
validation F1 on the right axis (fixed 0 to 1). Points are added with
:meth:`LossPlot.add_point`; the widget repaints itself, cheaply, on the UI thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["EpochPoint", "LossPlot"]

_TRAIN_COLOUR = QColor(66, 165, 245)  # blue
_VAL_LOSS_COLOUR = QColor(255, 167, 38)  # orange
_F1_COLOUR = QColor(102, 187, 106)  # green


@dataclass
class EpochPoint:
    """One epoch's figures (``None`` where not computed)."""

    epoch: int
    train_loss: float | None
    val_loss: float | None
    val_f1: float | None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class LossPlot(QWidget):
    """Line plot of train loss, validation loss (left axis) and validation F1 (right axis)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._points: list[EpochPoint] = []
        self._epochs: int | None = None
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.setToolTip("Per epoch: training loss, validation loss and validation F1")

    # -- data -------------------------------------------------------------------------------

    @property
    def points(self) -> list[EpochPoint]:
        """The points shown, in epoch order (a copy)."""
        return list(self._points)

    def set_epochs(self, epochs: int | None) -> None:
        """Fix the x axis to ``1..epochs`` (``None``: fit the points)."""
        self._epochs = epochs
        self.update()

    def add_point(
        self,
        epoch: int,
        train_loss: float | None,
        val_loss: float | None = None,
        val_f1: float | None = None,
    ) -> None:
        """Add (or replace) the figures of one epoch and repaint."""
        point = EpochPoint(int(epoch), train_loss, val_loss, val_f1)
        self._points = [p for p in self._points if p.epoch != point.epoch] + [point]
        self._points.sort(key=lambda p: p.epoch)
        self.update()

    def clear(self) -> None:
        """Remove every point."""
        self._points = []
        self.update()

    # -- painting ---------------------------------------------------------------------------

    def sizeHint(self) -> QSize:
        return QSize(300, 170)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.Antialiasing)
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        text_colour = self.palette().color(self.foregroundRole())
        grid_colour = QColor(text_colour)
        grid_colour.setAlpha(60)
        metrics = painter.fontMetrics()
        line_h = metrics.height()
        left, right, top, bottom = 44, 34, line_h + 6, line_h + 8
        area = QRectF(
            left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom)
        )

        painter.setPen(QPen(grid_colour, 1))
        painter.drawRect(area)

        # legend
        x = float(left)
        for name, colour in (
            ("train loss", _TRAIN_COLOUR),
            ("val loss", _VAL_LOSS_COLOUR),
            ("val F1", _F1_COLOUR),
        ):
            painter.setPen(QPen(colour, 2))
            painter.drawLine(QPointF(x, line_h / 2 + 2), QPointF(x + 14, line_h / 2 + 2))
            painter.setPen(text_colour)
            painter.drawText(QPointF(x + 18, line_h - 1), name)
            x += 26 + metrics.horizontalAdvance(name)

        if not self._points:
            painter.setPen(text_colour)
            painter.drawText(area, Qt.AlignCenter, "loss and F1 appear here after each epoch")
            return

        epochs = [p.epoch for p in self._points]
        x_min = 1
        x_max = max(self._epochs or 0, max(epochs), 2)
        losses = [v for p in self._points for v in (p.train_loss, p.val_loss) if _finite(v)]
        loss_max = max(losses) if losses else 1.0
        loss_max = loss_max * 1.05 if loss_max > 0 else 1.0

        def sx(epoch: float) -> float:
            return area.left() + (epoch - x_min) / (x_max - x_min) * area.width()

        def sy(value: float, vmax: float) -> float:
            return area.bottom() - max(0.0, min(1.0, value / vmax)) * area.height()

        # axes labels
        painter.setPen(text_colour)
        painter.drawText(
            QRectF(0, area.top() - line_h / 2, left - 4, line_h),
            Qt.AlignRight | Qt.AlignVCenter,
            f"{loss_max:.2g}",
        )
        painter.drawText(
            QRectF(0, area.bottom() - line_h / 2, left - 4, line_h),
            Qt.AlignRight | Qt.AlignVCenter,
            "0",
        )
        painter.drawText(
            QRectF(area.right() + 4, area.top() - line_h / 2, right, line_h),
            Qt.AlignLeft | Qt.AlignVCenter,
            "1",
        )
        painter.drawText(
            QRectF(area.left(), area.bottom() + 2, area.width(), line_h),
            Qt.AlignCenter,
            f"epoch (1-{x_max})",
        )

        for attr, colour, vmax in (
            ("train_loss", _TRAIN_COLOUR, loss_max),
            ("val_loss", _VAL_LOSS_COLOUR, loss_max),
            ("val_f1", _F1_COLOUR, 1.0),
        ):
            series = [(p.epoch, getattr(p, attr)) for p in self._points]
            series = [(e, v) for e, v in series if _finite(v)]
            if not series:
                continue
            path = QPainterPath()
            path.moveTo(sx(series[0][0]), sy(series[0][1], vmax))
            for e, v in series[1:]:
                path.lineTo(sx(e), sy(v, vmax))
            painter.setPen(QPen(colour, 2))
            painter.drawPath(path)
            painter.setBrush(colour)
            for e, v in series:
                painter.drawEllipse(QPointF(sx(e), sy(v, vmax)), 2.5, 2.5)
            painter.setBrush(Qt.NoBrush)
