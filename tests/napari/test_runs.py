"""The viewer's background runs (napari/runs.py): a worker whose Qt objects are gone ends
quietly, late reports never reach a closed window, and closing stops and awaits the runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from napari_deparray_ctc.napari.runs import BackgroundRuns, is_deleted_qt_object

_DELETED_SIGNALS = """
import sys, threading
from qtpy.QtWidgets import QApplication
from qtpy import sip
from qtpy.QtCore import QThreadPool
app = QApplication([])
from napari.qt.threading import create_worker, FunctionWorker
cls = FunctionWorker
if sys.argv[1] == "guarded":
    from napari_deparray_ctc.napari.runs import GuardedFunctionWorker as cls
release = threading.Event()
worker = create_worker(lambda: release.wait(10) and 42, _start_thread=False, _worker_class=cls)
worker.start()
sip.delete(worker.signals)  # what Qt's teardown does to a worker's signal object
release.set()
QThreadPool.globalInstance().waitForDone(10000)
print("SURVIVED")
"""


def _deleted_signals(kind: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run(
        [sys.executable, "-c", _DELETED_SIGNALS, kind],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_a_report_after_the_qt_objects_were_deleted_ends_the_thread_quietly():
    """The cause of "Aborted" on close: a worker emitting into deleted Qt objects. napari's
    plain worker aborts the process (PyQt's fatal handler); the plugin's guarded one ends."""
    plain = _deleted_signals("plain")
    assert plain.returncode != 0 and "has been deleted" in plain.stderr  # the failure, shown
    guarded = _deleted_signals("guarded")
    assert guarded.returncode == 0, guarded.stderr[-2000:]
    assert "SURVIVED" in guarded.stdout and "has been deleted" not in guarded.stderr


def test_late_reports_are_dropped_once_the_window_closes(make_napari_viewer, qtbot):
    runs = BackgroundRuns(make_napari_viewer())
    seen = []
    release = threading.Event()
    worker = runs.function_worker(lambda: release.wait(10) and "result")
    runs.start(worker, "waiting", returned=seen.append)
    start = time.monotonic()
    closer = threading.Thread(target=lambda: (time.sleep(0.2), release.set()))
    closer.start()
    late = runs.close(wait_s=10)
    closer.join()
    qtbot.wait(200)
    assert late == [] and time.monotonic() - start < 10
    assert seen == []  # the result arrived after the close: nobody is called
    assert runs.start(runs.function_worker(lambda: 1), "after close") is None


def test_close_asks_every_run_to_stop_and_waits_for_it(make_napari_viewer, qtbot):
    runs = BackgroundRuns(make_napari_viewer())
    stop = threading.Event()
    worker = runs.function_worker(lambda: stop.wait(30))
    runs.start(worker, "a long job", stop=stop.set)
    assert runs.running == ["a long job"]
    assert runs.close(wait_s=10) == []
    assert stop.is_set() and worker.ended.is_set()


def test_only_deleted_qt_objects_are_taken_for_a_closed_window():
    assert is_deleted_qt_object(RuntimeError("wrapped C/C++ object of type X has been deleted"))
    assert not is_deleted_qt_object(RuntimeError("something else"))
    assert not is_deleted_qt_object(ValueError("has been deleted"))
