"""What the command line prints: one-line messages, a progress line, metrics and skip lists."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = [
    "PROG",
    "StderrProgress",
    "format_duration",
    "info",
    "print_metrics",
    "skip_warning",
    "train_progress_printer",
    "warn",
]

PROG = "deparray-ctc"
#: at most this many file names are listed per reason in the skip warning
MAX_LISTED = 8


def warn(message: str) -> None:
    """One ``deparray-ctc: warning: ...`` line on stderr."""
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


def info(message: str) -> None:
    """A progress note on stderr (stdout keeps the results)."""
    print(message, file=sys.stderr)


def format_duration(seconds: float | None) -> str:
    """``mm:ss`` (or ``h:mm:ss``); ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class StderrProgress:
    """A minimal progress line on stderr (no tqdm dependency).

    On a terminal the line is redrawn in place (at most ``refresh_s`` apart); when stderr is
    redirected, a plain line is written at most every ``log_every_s`` seconds, so logs stay
    short. Nothing is printed for a job with nothing to do. Call :meth:`close` once at the end.

    Parameters
    ----------
    label
        Text in front of the bar.
    total
        Number of steps, or ``None`` when unknown.
    stream
        Where to write (default ``sys.stderr``).
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        stream: TextIO | None = None,
        refresh_s: float = 0.2,
        log_every_s: float = 10.0,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.done = 0
        self.extra = ""
        self.eta_s: float | None = None
        self._start = time.perf_counter()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        # redirected output: the first line only after log_every_s (short jobs log one line)
        self._last = -math.inf if self._tty else self._start
        self._interval = refresh_s if self._tty else log_every_s
        self._last_line: str | None = None

    def update(
        self, done: int, total: int | None = None, extra: str = "", eta_s: float | None = None
    ) -> None:
        """Record progress (absolute count) and redraw if enough time has passed.

        Parameters
        ----------
        done, total
            Steps done, and the total (``None``: keep the last one).
        extra
            Text after the bar.
        eta_s
            The caller's estimate of the seconds left (NaN: unknown yet; default: from the
            average rate since the bar was made).
        """
        self.done = done
        if total is not None:
            self.total = total
        self.extra = extra
        self.eta_s = eta_s
        now = time.perf_counter()
        if now - self._last >= self._interval:
            self._last = now
            self._draw()

    def log_next(self) -> None:
        """Draw at the next update whatever the interval (e.g. at an epoch's end)."""
        if not self._tty:
            self._last = -math.inf

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(1.0, self.done / self.total)
            width = 24
            filled = int(frac * width)
            bar = "#" * filled + "-" * (width - filled)
            eta = self.eta_s
            if eta is None:
                eta = (self.total - self.done) / rate if rate > 0 else None
            text = (
                f"{self.label} [{bar}] {self.done}/{self.total} {frac:4.0%} "
                f"{format_duration(elapsed)}<{format_duration(eta)}"
            )
        else:
            text = f"{self.label} {self.done} done, {format_duration(elapsed)}, {rate:.1f}/s"
        return f"{text} {self.extra}".rstrip()

    def _draw(self) -> None:
        line = self._line()
        self.stream.write(("\r\x1b[2K" + line) if self._tty else (line + "\n"))
        self.stream.flush()
        self._last_line = line

    def close(self) -> None:
        """Draw the final state (unless just drawn, or there was nothing to do)."""
        if self.done == 0 and not self.total and self._last_line is None:
            return
        line = self._line()
        if self._tty:
            self.stream.write("\r\x1b[2K" + line + "\n")
        elif line != self._last_line:
            self.stream.write(line + "\n")
        self.stream.flush()


def skip_warning(skipped: Sequence[tuple[str, str]]) -> None:
    """One warning for every skipped file: grouped by reason, sorted, each reason said once."""
    if not skipped:
        return
    by_reason: dict[str, list[str]] = {}
    for path, reason in sorted(set(skipped)):
        by_reason.setdefault(reason, []).append(path)
    parts = []
    for reason, paths in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0])):
        shown = ", ".join(paths[:MAX_LISTED])
        more = f" and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else ""
        parts.append(f"{reason} ({len(paths)}: {shown}{more})")
    warn(f"skipped {len(set(skipped))} unreadable file(s): " + "; ".join(parts))


def only_other_images(skipped: Sequence[tuple[str, str]]) -> bool:
    """True when everything skipped is an image that is not a TIFF (PNG, JPEG...)."""
    return bool(skipped) and all(
        os.path.splitext(path)[1].lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif")
        for path, _ in skipped
    )


def print_metrics(metrics: dict, title: str, stream: TextIO | None = None) -> None:
    """Precision, recall, F1, PR-AUC, accuracy, threshold and the confusion matrix."""
    out = stream or sys.stdout
    print(title, file=out)
    for key in ("precision", "recall", "f1", "average_precision", "accuracy", "threshold"):
        if metrics.get(key) is not None:
            name = "PR-AUC (AP)" if key == "average_precision" else key
            print(f"  {name:<12} {float(metrics[key]):.4f}", file=out)
    cm = metrics.get("confusion_matrix")
    if isinstance(cm, dict) and "matrix" in cm:
        (tn, fp), (fn, tp) = cm["matrix"]
        print("  confusion matrix (rows = true, columns = predicted):", file=out)
        print(f"  {'':>10}{'WBC':>8}{'CTC':>8}", file=out)
        print(f"  {'WBC':>10}{tn:>8}{fp:>8}", file=out)
        print(f"  {'CTC':>10}{fn:>8}{tp:>8}", file=out)


class _Pace:
    """Seconds per training batch since the first one (set-up and reading excluded)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.batches = 0

    def batch(self) -> None:
        """Count one trained batch."""
        if self.first is None:
            self.first = time.perf_counter()
        self.batches += 1

    def eta(self, remaining: int) -> float | None:
        """Seconds for ``remaining`` batches at the pace so far (validation time included)."""
        if self.first is None or self.batches < 2:
            return None
        return (time.perf_counter() - self.first) / (self.batches - 1) * max(remaining, 0)


def _run_position(p: Any, bar: StderrProgress) -> tuple[int, int]:
    """``(done, total)`` steps of the whole run from a ``TrainProgress``."""
    if p.step is not None and p.steps:
        return int(p.step), int(p.steps)
    # a report without run-wide steps: count within the fold
    batches = max(1, p.batches)
    total = p.epochs * batches
    if p.phase == "batch":
        return (p.epoch - 1) * batches + p.batch, total
    if p.phase == "epoch_end":
        return p.epoch * batches, total
    if p.phase == "done":  # it carries no batch count
        total = bar.total or total
        return total, total
    return bar.done, bar.total or total


def train_progress_printer(
    label: str = "train", stream: TextIO | None = None
) -> tuple[Callable[[Any], None], Callable]:
    """A ``progress`` callable for ``core.training.train.train`` drawing one line, and its closer.

    One bar for the whole run, 0 to 100 % over every fold's batches (``TrainProgress.step``
    of ``steps``), with an ETA from the pace of all batches trained so far; the fold, epoch,
    loss and F1 follow the bar.

    Parameters
    ----------
    label
        Text in front of the bar.
    stream
        Where to draw (default ``sys.stderr``).

    Returns
    -------
    tuple
        ``(on_progress, close)``: pass ``on_progress`` as ``progress``; call ``close()`` once
        at the end.
    """
    bar = StderrProgress(label, stream=stream)
    pace = _Pace()

    def on_progress(p: Any) -> None:
        if p.phase == "batch":
            pace.batch()
        done, total = _run_position(p, bar)
        extra = f"epoch {p.epoch}/{p.epochs}"
        if getattr(p, "fold", None) is not None:
            extra = f"fold {p.fold}/{p.folds} " + extra
        if p.train_loss is not None:
            extra += f" loss {p.train_loss:.3f}"
        if p.val_f1 is not None:
            extra += f" val F1 {p.val_f1:.3f}"
        if p.best_f1 is not None:
            extra += f" best {p.best_f1:.3f}"
        eta = 0.0 if p.phase == "done" else pace.eta(total - done)
        bar.update(done, total, extra, eta_s=math.nan if eta is None else eta)
        if p.phase == "epoch_end":
            bar.log_next()  # always log epoch ends in redirected output

    return on_progress, bar.close
