"""Background work of one viewer: every worker the plugin starts is started, followed and
ended here, so that no thread outlives its window.

A widget never starts a thread itself. It asks its session's :class:`BackgroundRuns` (one per
viewer) to start a worker, with the callbacks to run on the UI thread when the worker reports.
The runs object then

* relays the worker's signals to those callbacks only while the viewer is open: once the
  window closes, a late ``returned`` or ``progress`` is dropped instead of reaching a deleted
  widget;
* lists every running worker in napari's task status, so closing the window asks first
  ("Training classifier: epoch 3 of 9") and then cancels them;
* on close (the window's task cancel, or the application quitting), asks every worker to stop
  (training keeps what *Stop* keeps) and waits a bounded time for it to end;
* runs every worker inside a guard: a signal emitted after Qt deleted its object at shutdown
  (``wrapped C/C++ object ... has been deleted``) ends the thread quietly instead of reaching
  PyQt's fatal handler, which aborts the process.

This module holds no widget and no layer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any

from napari.qt.threading import FunctionWorker, create_worker

__all__ = [
    "STOP_WAIT_S",
    "BackgroundRuns",
    "GuardedFunctionWorker",
    "GuardedRunMixin",
    "RunOwner",
    "is_deleted_qt_object",
]

LOG = logging.getLogger(__name__)
#: how long closing the window waits for the running workers to stop, in all
STOP_WAIT_S = 30.0
_ALL_RUNS: weakref.WeakSet = weakref.WeakSet()
_QUIT_HOOKED = False


def is_deleted_qt_object(exc: BaseException) -> bool:
    """Whether ``exc`` says a Qt object was already deleted (the window closed)."""
    return isinstance(exc, RuntimeError) and "has been deleted" in str(exc)


class GuardedRunMixin:
    """A napari ``WorkerBase`` whose thread never dies of a Qt object deleted at shutdown.

    ``ended`` is set when the thread's ``run`` returns, whatever happened.
    """

    def _init_guard(self) -> None:
        self.ended = threading.Event()

    def run(self) -> None:  # called by QThreadPool, in the worker thread
        try:
            super().run()  # type: ignore[misc]
        except RuntimeError as exc:
            # emitting a signal after the window and its objects were deleted: nobody is
            # listening any more, so the thread ends here instead of aborting the process
            LOG.debug("background work ended after its window closed: %s", exc)
        except Exception:  # pragma: no cover - napari's run() already catches these
            LOG.exception("background work failed")
        finally:
            self.ended.set()


class GuardedFunctionWorker(GuardedRunMixin, FunctionWorker):
    """``napari.qt.threading.FunctionWorker`` with the shutdown guard (see the module)."""

    def __init__(self, func: Callable, *args: Any, **kwargs: Any) -> None:
        super().__init__(func, *args, **kwargs)
        self._init_guard()


def _hook_application_quit() -> None:
    """Once per process: end every viewer's runs when the Qt application quits."""
    global _QUIT_HOOKED
    if _QUIT_HOOKED:
        return
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        return
    app.aboutToQuit.connect(_close_all_runs)
    _QUIT_HOOKED = True


def _close_all_runs() -> None:
    for runs in list(_ALL_RUNS):
        runs.close()


class _Run:
    """One started worker and what is needed to end it."""

    def __init__(self, worker: Any, name: str, stop: Callable[[], None] | None) -> None:
        self.worker = worker
        self.name = name
        self.stop = stop
        self.task_id: Any = None


class BackgroundRuns:
    """The running workers of one viewer (see the module docstring).

    Parameters
    ----------
    viewer
        The napari viewer (held weakly); its window's task status lists the runs.
    """

    def __init__(self, viewer: Any) -> None:
        self._viewer_ref = weakref.ref(viewer)
        self._runs: dict[int, _Run] = {}
        self.closed = False
        _ALL_RUNS.add(self)

    # -- starting -------------------------------------------------------------------------

    def function_worker(self, func: Callable, *args: Any, **kwargs: Any) -> GuardedFunctionWorker:
        """A not-yet-started guarded worker calling ``func(*args, **kwargs)`` in a thread."""
        return create_worker(
            func, *args, _start_thread=False, _worker_class=GuardedFunctionWorker, **kwargs
        )

    def start(
        self,
        worker: Any,
        name: str,
        *,
        stop: Callable[[], None] | None = None,
        **callbacks: Callable[..., Any],
    ) -> Any | None:
        """Start ``worker`` and relay its signals to ``callbacks`` while the viewer is open.

        Parameters
        ----------
        worker
            A napari worker not started yet: a :class:`GuardedFunctionWorker` or a
            ``WorkerBase`` subclass with :class:`GuardedRunMixin`.
        name
            What it does, in words (napari's close dialog lists it).
        stop
            How to ask it to stop early (classification, training); ``None`` for short jobs
            that end by themselves.
        **callbacks
            ``signal name -> callable`` (``returned=...``, ``progress=...``, ``finished=...``),
            called on the UI thread.

        Returns
        -------
        The worker, started; ``None`` when the viewer is closing (nothing is started).
        """
        if self.closed:
            return None
        _hook_application_quit()
        run = _Run(worker, name, stop)
        key = id(worker)
        self._runs[key] = run
        for signal, callback in callbacks.items():
            getattr(worker, signal).connect(self._relay(callback))
        worker.finished.connect(lambda key=key: self._forget(key))
        run.task_id = self._register_task(run)
        worker.start()
        return worker

    def _relay(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        def relayed(*args: Any) -> None:
            if self.closed:
                return  # the window is closing: the widgets are going away
            try:
                callback(*args)
            except RuntimeError as exc:
                if not is_deleted_qt_object(exc):
                    raise
                LOG.debug("dropped a report for a closed widget: %s", exc)

        return relayed

    def _forget(self, key: int) -> None:
        run = self._runs.pop(key, None)
        if run is not None:
            self._update_task(run, done=True)

    # -- napari's task status (the window's close dialog) ----------------------------------

    def _task_manager(self) -> Any | None:
        """The window's task status manager (private in napari: absent, it is skipped)."""
        viewer = self._viewer_ref()
        window = getattr(viewer, "window", None) if viewer is not None else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # napari's private-access notice
            qt_window = getattr(window, "_qt_window", None)
            return getattr(qt_window, "_task_status_manager", None)

    def _register_task(self, run: _Run) -> Any:
        manager = self._task_manager()
        if manager is None:
            return None
        try:
            from napari.utils.task_status import Status

            return manager.register_task_status(
                "DEPArray CTC", Status.BUSY, run.name, cancel_callback=self._cancel_from_napari
            )
        except Exception:  # the status is a courtesy; the run goes on
            return None

    def _update_task(self, run: _Run, done: bool) -> None:
        manager = self._task_manager()
        if manager is None or run.task_id is None:
            return
        with contextlib.suppress(Exception):
            from napari.utils.task_status import Status

            manager.update_task_status(run.task_id, Status.COMPLETED if done else Status.BUSY)

    def _cancel_from_napari(self) -> bool:
        """napari's window is closing (its task cancel): end every run."""
        self.close()
        return True

    # -- ending ---------------------------------------------------------------------------

    @property
    def running(self) -> list[str]:
        """What is running now, in words."""
        return [run.name for run in self._runs.values()]

    def is_running(self, worker: Any) -> bool:
        """Whether ``worker`` was started here and has not finished."""
        return worker is not None and id(worker) in self._runs

    def close(self, wait_s: float = STOP_WAIT_S) -> list[str]:
        """Stop every run and wait for them to end (at most ``wait_s`` in all).

        After this, no callback is called any more. Returns what did not end in time.
        """
        self.closed = True
        runs = list(self._runs.values())
        for run in runs:
            if run.stop is not None:
                with contextlib.suppress(Exception):
                    run.stop()
            with contextlib.suppress(Exception):
                run.worker.quit()
        deadline = time.monotonic() + wait_s
        late = []
        for run in runs:
            ended = getattr(run.worker, "ended", None)
            if ended is None:
                continue
            if not ended.wait(max(0.0, deadline - time.monotonic())):
                late.append(run.name)
        if late:
            LOG.warning("still running after the window closed: %s", ", ".join(late))
        self._runs.clear()
        return late


class RunOwner:
    """What the owner of one kind of run shares (classify, train, calibrate): its session,
    its events, the running worker (one at a time) and the last outcome.

    Parameters
    ----------
    session
        The viewer's :class:`~napari_deparray_ctc.napari.session.Session`.
    """

    #: the run's events: ``started``, ``stage`` and ``progress`` while it runs, ``finished``
    #: once at the end (a subclass that reports no steps names fewer)
    EVENTS: tuple[str, ...] = ("started", "stage", "progress", "finished")

    def __init__(self, session: Any) -> None:
        from napari.utils.events import EmitterGroup, Event

        self.session = session
        self.events = EmitterGroup(source=self, **{name: Event for name in self.EVENTS})
        self.worker: Any = None
        self.last_outcome: Any = None
        self.activity: Any = None  # napari's activity-dock progress bar of the run

    @property
    def is_running(self) -> bool:
        """Whether a run is in progress."""
        return self.worker is not None

    def _open_activity(self, total: int, description: str) -> None:
        from napari.utils import progress

        self.activity = progress(total=total, desc=description)

    def _close_activity(self) -> None:
        if self.activity is not None:
            with contextlib.suppress(Exception):  # the activity dock only mirrors the run
                self.activity.close()
            self.activity = None

    def _start_worker(self, worker: Any, name: str) -> None:
        """Run a worker that reports steps (``stage``, ``progress``) and stops on request, its
        reports relayed to this owner's ``_on_*`` methods (``self.worker`` set before)."""
        self.session.runs.start(
            worker,
            name,
            stop=worker.stop,
            stage=self._on_stage,
            progress=self._on_progress,
            returned=self._on_returned,
            errored=self._on_errored,
            finished=self._on_finished,
        )

    def _on_stage(self, text: str) -> None:
        self.events.stage(text=text)

    # what a worker reports; each owner says what it means
    _on_progress: Callable[..., None]
    _on_returned: Callable[..., None]
    _on_errored: Callable[[BaseException], None]

    def _on_finished(self) -> None:
        """The worker's thread ended (its outcome was reported before)."""
        self.worker = None
        self._close_activity()
