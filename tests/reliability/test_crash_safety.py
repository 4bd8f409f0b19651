"""Crash safety: nothing the user had is lost when the plugin is killed mid-write.

* A static scan of the source tree: every file the plugin writes (models, CSVs, annotation
  sidecars, settings) goes through :func:`napari_deparray_ctc.core.atomic.atomic_write`
  (temporary file, fsync, rename); a new direct write fails the test.
* ``kill -9`` of a training process (``core.train`` with ``out=model.pt`` where a model
  already exists), at random times and right inside a model write: ``model.pt`` is always a
  complete model (the old bytes, or a complete newer model).
* ``kill -9`` of ``deparray-ctc classify --out existing.csv`` during classification and right
  inside the CSV write: ``existing.csv`` keeps its bytes.
* ``kill -9`` of a napari process in which cells are being annotated with the annotation keys:
  every annotation made before the kill is there when the export is opened again.

What a kill can leave behind is a hidden temporary file (``.<name>.<random>.tmp``) beside the
target; the tests check that nothing else is left and that the reader ignores such files.
"""

from __future__ import annotations

import ast
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import python_env, write_good_cells

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "napari_deparray_ctc"

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGKILL"), reason="needs POSIX signals (kill -9)"
)

# --------------------------------------------------------------------------------------------
# static scan: no direct writes of user files

#: calls that write a file given by path, by attribute / function name
_WRITER_NAMES = {
    "write_text",
    "write_bytes",
    "imwrite",
    "imsave",
    "savez",
    "savez_compressed",
    "savetxt",
    "tofile",
    "to_csv",
    "to_json",
    "to_parquet",
}
#: writers recognised by their module (``np.save``, ``shutil.copy``...)
_WRITER_FUNCTIONS = {
    "np.save",
    "numpy.save",
    "torch.save",
    "json.dump",
    "pickle.dump",
    "shutil.copy",
    "shutil.copy2",
    "shutil.copyfile",
    "shutil.move",
}
#: direct writes that are safe: (file name, called name) -> why
_ALLOWED = {
    ("sample_data.py", "write_text"): (
        "completion marker inside a private staging folder that is then moved into place with "
        "one os.replace of the whole folder (the sample cache, not a user file)"
    ),
    ("ifd_chain.py", "open"): (
        "os.open with O_RDONLY | O_NONBLOCK, to look at a file without blocking on a pipe or "
        "device before tifffile opens it; nothing is written"
    ),
    ("sidecars.py", "open"): (
        "os.open of the export folder, read-only, to hold the advisory lock of a save; "
        "nothing is written through it"
    ),
    ("results_box.py", "to_csv"): (
        "ClassificationResults.to_csv (napari/results.py), which calls core.cell_table's "
        "write_cell_table, which writes through atomic_write "
        "(checked by test_project_writers_used_by_name_are_atomic)"
    ),
}
#: project methods that the allow-list relies on being atomic: (file, function)
_ATOMIC_PROJECT_WRITERS = [("core/annotations/cell_table.py", "write_cell_table")]
_WRITE_MODE = re.compile(r"[wax+]")


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _mode_of_open(call: ast.Call) -> str | None:
    """The mode string of ``open(...)`` / ``x.open(...)`` (``None`` when not a literal)."""
    for keyword in call.keywords:
        if keyword.arg == "mode" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    position = 1 if isinstance(call.func, ast.Name) or _dotted(call.func) == "io.open" else 0
    if len(call.args) > position and isinstance(call.args[position], ast.Constant):
        return str(call.args[position].value)
    if len(call.args) <= position:
        return "r"  # no mode given: reading
    return None if position == 1 else "r"  # x.open(path_or_other): not a file mode


class _WriteFinder(ast.NodeVisitor):
    """Collects direct writes outside ``with atomic_write(...)`` blocks."""

    def __init__(self) -> None:
        self.inside_atomic = 0
        self.memory_buffers: list[set[str]] = [set()]
        self.found: list[tuple[int, str]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        buffers = {
            target.id
            for child in ast.walk(node)
            if isinstance(child, ast.Assign)
            and isinstance(child.value, ast.Call)
            and _called_name(child.value) in ("BytesIO", "StringIO")
            for target in child.targets
            if isinstance(target, ast.Name)
        }
        self.memory_buffers.append(buffers)
        self.generic_visit(node)
        self.memory_buffers.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_With(self, node: ast.With) -> None:
        atomic = any(
            isinstance(item.context_expr, ast.Call)
            and _called_name(item.context_expr) == "atomic_write"
            for item in node.items
        )
        self.inside_atomic += atomic
        self.generic_visit(node)
        self.inside_atomic -= atomic

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        if self.inside_atomic:
            return
        name = _called_name(node)
        dotted = _dotted(node.func)
        if name == "open" and dotted != "os.open":
            mode = _mode_of_open(node)
            builtin = isinstance(node.func, ast.Name) or dotted == "io.open"
            if (mode is None and builtin) or (mode is not None and _WRITE_MODE.search(mode)):
                self.found.append((node.lineno, f"{dotted or name}(..., {mode!r})"))
            return
        if dotted in ("os.open", "os.fdopen"):
            self.found.append((node.lineno, dotted))
            return
        if dotted not in _WRITER_FUNCTIONS and name not in _WRITER_NAMES:
            return
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Name) and first.id in self.memory_buffers[-1]:
            return  # written into an in-memory buffer, saved atomically elsewhere
        self.found.append((node.lineno, f"{dotted or name}(...)"))


def _function(tree: ast.Module, name: str) -> ast.FunctionDef | None:
    return next(
        (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name), None
    )


def _writes_atomically(function: ast.FunctionDef) -> bool:
    return any(
        isinstance(child, ast.With)
        and any(
            isinstance(item.context_expr, ast.Call)
            and _called_name(item.context_expr) == "atomic_write"
            for item in child.items
        )
        for child in ast.walk(function)
    )


def find_direct_writes(package: Path = PACKAGE) -> list[str]:
    """``"file:line: call"`` for every write that bypasses atomic_write (allowed ones left out)."""
    trees = {
        path: ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for path in sorted(package.rglob("*.py"))
        if path.name != "atomic.py"
    }
    problems = []
    for path, tree in trees.items():
        finder = _WriteFinder()
        finder.visit(tree)
        for line, call in finder.found:
            name = call.split("(")[0].split(".")[-1]
            if (path.name, name) in _ALLOWED:
                continue
            problems.append(f"{path.relative_to(REPO)}:{line}: {call}")
    return problems


def test_every_file_the_plugin_writes_goes_through_atomic_write() -> None:
    problems = find_direct_writes()
    assert not problems, (
        "files written without napari_deparray_ctc.core.atomic.atomic_write (a crash could "
        "leave them half-written):\n" + "\n".join(problems)
    )


def test_project_writers_used_by_name_are_atomic() -> None:
    """The allow-list trusts some project methods by name: they really use atomic_write."""
    results = ast.parse((PACKAGE / "napari" / "results.py").read_text(encoding="utf-8"))
    to_csv = _function(results, "to_csv")
    assert to_csv is not None and any(
        isinstance(n, ast.Call) and _called_name(n) == "write_cell_table" for n in ast.walk(to_csv)
    ), "napari/results.py:to_csv no longer writes through core.cell_table.write_cell_table"
    for relative, name in _ATOMIC_PROJECT_WRITERS:
        path = PACKAGE / relative
        function = _function(ast.parse(path.read_text(encoding="utf-8")), name)
        assert function is not None, f"{relative} no longer defines {name}"
        assert _writes_atomically(function), f"{relative}:{name} no longer uses atomic_write"


def test_the_scan_catches_direct_writes(tmp_path) -> None:
    """The scanner itself: it flags each kind of direct write and accepts the atomic ones."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "bad.py").write_text(
        textwrap.dedent(
            """
            import json, pickle, numpy as np, torch
            from pathlib import Path
            def f(path, df, obj):
                with open(path, "w") as h:
                    h.write("x")
                Path(path).write_text("x")
                Path(path).open("wb")
                np.save(path, obj)
                torch.save(obj, path)
                df.to_csv(path)
                json.dump(obj, open(path, "a"))
            """
        )
    )
    (package / "good.py").write_text(
        textwrap.dedent(
            """
            import io, json, torch, tifffile
            from napari_deparray_ctc.core.atomic import atomic_write
            def g(path, obj):
                with atomic_write(path, "wb") as h:
                    torch.save(obj, h)
                with atomic_write(path, "w") as h:
                    json.dump(obj, h)
                with open(path) as h:
                    h.read()
                buffer = io.BytesIO()
                tifffile.imwrite(buffer, obj)
            def h(array, viewer, path):
                array.copy()
                viewer.open(path, plugin="x")
            """
        )
    )
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        found = find_direct_writes(package)
    finally:
        REPO = saved
    assert all(line.startswith("pkg/bad.py") for line in found), found
    assert len(found) == 8, found  # open, write_text, Path.open, np.save, torch.save, to_csv,
    # json.dump and its open(..., "a")


# --------------------------------------------------------------------------------------------
# helpers for the kill tests


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _assert_only_hidden_temp_files(folder: Path, keep: set[str], target: str) -> list[str]:
    """Besides ``keep``, only atomic_write's hidden temporaries of ``target`` may remain."""
    left = _leftovers(folder, keep)
    pattern = re.compile(rf"^\.{re.escape(target)}\..+\.tmp$")
    assert all(pattern.match(name) for name in left), left
    return left


class Child:
    """A Python child process whose stdout lines are read as they come."""

    def __init__(self, code: str, *args: str, env: dict | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or python_env(),
        )
        self.lines: list[str] = []

    def wait_for(self, prefix: str, timeout: float = 240) -> str:
        """Read lines until one starts with ``prefix`` (fails if the child exits first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                err = self.process.stderr.read()
                raise AssertionError(f"child ended before {prefix!r}: {self.lines}\n{err}")
            self.lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return line.rstrip("\n")
        raise AssertionError(f"no {prefix!r} within {timeout} s: {self.lines}")

    def kill(self) -> list[str]:
        """``kill -9`` the child; return every line it printed (including those still piped)."""
        self.process.send_signal(signal.SIGKILL)
        out, _ = self.process.communicate(timeout=60)
        self.lines.extend(out.splitlines())
        assert self.process.returncode == -signal.SIGKILL
        return self.lines

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=60)


# --------------------------------------------------------------------------------------------
# kill -9 during training


TRAIN_CHILD = textwrap.dedent(
    """
    import contextlib, sys, time
    import numpy as np
    from napari_deparray_ctc.core import atomic
    from napari_deparray_ctc.core.training import TrainingSet
    from napari_deparray_ctc.core.training.train import TrainConfig, train

    real_atomic_write = atomic.atomic_write
    slow_disk = sys.argv[3] == "slow-disk"

    class SlowHandle:
        # a slow disk (a network share): every write call takes 2 ms more
        def __init__(self, handle):
            self.handle = handle
        def write(self, data):
            time.sleep(0.002)
            return self.handle.write(data)
        def __getattr__(self, name):
            return getattr(self.handle, name)

    @contextlib.contextmanager
    def announced_atomic_write(path, mode="w", **kwargs):
        with real_atomic_write(path, mode, **kwargs) as handle:
            print("WRITE-OPEN", flush=True)  # the temporary file exists now
            yield SlowHandle(handle) if slow_disk else handle
        print("WRITE-DONE", flush=True)  # renamed into place

    atomic.atomic_write = announced_atomic_write  # save_model imports it at call time
    rng = np.random.default_rng(int(sys.argv[2]))
    yy, xx = np.mgrid[:32, :32]
    images, labels = [], []
    for i in range(24):
        radius = 6 + (i % 2) * 5 + rng.normal(0, 1)
        disc = np.hypot(yy - 16, xx - 16) < radius
        images.append((1000 + 600 * disc + rng.normal(0, 80, (32, 32))).astype("uint16"))
        labels.append("CTC" if i % 2 else "WBC")
    config = TrainConfig(
        epochs=200, patience=200, image_size=32, batch_size=8, augment=(), lr=0.01,
        dapi_strategy="none", val_fraction=0.5, device="cpu", num_threads=1,
        out=sys.argv[1], seed=int(sys.argv[2]),
    )
    print("TRAINING", flush=True)
    train(config, data=TrainingSet(bf=images, labels=labels),
          progress=lambda p: print("EPOCH", p.epoch, flush=True) if p.phase == "epoch_end" else None)
    print("FINISHED", flush=True)
    """
)


def _previous_model(path: Path) -> str:
    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    save_model(path, build_network("resnet18"), {"arch": "resnet18", "threshold": 0.42})
    return _digest(path)


def _check_model_survived(path: Path, previous: str) -> bool:
    """``path`` is a complete model; returns True when it is still the previous one."""
    from napari_deparray_ctc.core.model.loaded import load_model

    model = load_model(path, device="cpu")  # raises if half-written
    assert model.arch == "resnet18"
    return _digest(path) == previous


@pytest.mark.time_limit(900)
@pytest.mark.parametrize(
    "when",
    [
        pytest.param(("inside-write", 0.0), id="right-after-a-write-starts"),
        pytest.param(("inside-write", 0.05), id="50ms-into-a-write"),
        pytest.param(("random", 7), id="at-a-random-time-in-training"),
    ],
)
def test_kill_during_training_keeps_the_previous_model(tmp_path, when) -> None:
    how, value = when
    path = tmp_path / "model.pt"
    previous = _previous_model(path)
    disk = "slow-disk" if how == "inside-write" else "normal-disk"
    child = Child(TRAIN_CHILD, str(path), "0", disk)
    try:
        child.wait_for("TRAINING")
        if how == "inside-write":
            child.wait_for("WRITE-OPEN")
            time.sleep(value)
        else:
            child.wait_for("EPOCH")  # some training done, then a random moment
            time.sleep(random.Random(value).uniform(0.0, 1.5))
        lines = child.kill()
    finally:
        child.close()
    unchanged = _check_model_survived(path, previous)  # complete: old, or a complete new one
    left = _assert_only_hidden_temp_files(tmp_path, {"model.pt"}, "model.pt")
    if how == "inside-write":
        # the kill hit the write: its temporary file is left, the rename never happened
        assert lines[-1] == "WRITE-OPEN" and left, (lines[-3:], left)
        if lines.count("WRITE-DONE") == 0:
            assert unchanged, "the first write was interrupted, yet model.pt changed"


def test_temporary_files_left_by_a_kill_are_ignored_by_the_reader(tmp_path) -> None:
    """A kill during a write leaves ``.<name>.<random>.tmp``; opening the folder ignores it."""
    from napari_deparray_ctc.core.io import read_export
    from napari_deparray_ctc.napari.reader import napari_get_reader, read_deparray

    folder = tmp_path / "export"
    write_good_cells(folder, 2)
    cell = (folder / "cell0000.tif").read_bytes()
    (folder / ".deparray_annotations.csv.k3j2h1.tmp").write_text("cell_id,lab")
    (folder / ".cell0005.tif.a8b7c6.tmp").write_bytes(cell[: len(cell) // 2])
    (folder / ".calls.csv.zz9.tmp").write_text("cell_id,path,p_c")
    export = read_export(folder)
    assert export.cell_ids == ["cell0000", "cell0001"] and export.skipped == []
    assert napari_get_reader(str(folder)) is read_deparray


# --------------------------------------------------------------------------------------------
# kill -9 during classification / CSV export


CLASSIFY_CHILD = textwrap.dedent(
    """
    import csv, sys, time
    from napari_deparray_ctc.cli import data as cli_data
    from napari_deparray_ctc.cli import main as cli_main

    slow = sys.argv[1] == "slow-disk"
    real_writer = csv.writer

    class SlowWriter:
        # a slow disk: each row is flushed and takes 2 ms (makes a kill land mid-write)
        def __init__(self, handle, *args, **kwargs):
            self.handle, self.writer, self.rows = handle, real_writer(handle, *args, **kwargs), 0
        def writerow(self, row):
            self.writer.writerow(row)
            self.rows += 1
            if self.rows == 2:
                print("CSV-WRITING", flush=True)
            if slow:
                self.handle.flush()
                time.sleep(0.002)
        def writerows(self, rows):
            for row in rows:
                self.writerow(row)

    csv.writer = SlowWriter  # core.cell_table's DictWriter builds its writer from it
    real_load = cli_data.load_cli_model

    def announced_load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        print("MODEL-LOADED", flush=True)
        return model

    cli_data.load_cli_model = announced_load
    print("CLASSIFYING", flush=True)
    code = cli_main(["classify", *sys.argv[2:]])
    print("EXIT", code, flush=True)
    """
)


@pytest.fixture(scope="module")
def many_cells(tmp_path_factory) -> Path:
    """600 tiny cells in one multi-cell stack file (cheap to write, enough rows to be slow)."""
    import tifffile

    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(3)
    stack = rng.integers(100, 4000, (600, 2, 16, 16)).astype("uint16")
    # a shaped (non-OME) stack: Q = the cell axis; an OME T axis would be time points
    tifffile.imwrite(folder / "cells.tif", stack, metadata={"axes": "QCYX"})
    return folder


@pytest.mark.time_limit(600)
@pytest.mark.parametrize("when", ["during-classification", "inside-the-csv-write"])
def test_kill_during_classify_keeps_the_previous_csv(tmp_path, many_cells, tiny_model, when):
    out = tmp_path / "existing.csv"
    out.write_text("cell_id,path,p_ctc,label,threshold\nold,old.tif,0.9,CTC,0.5\n")
    previous = _digest(out)
    argv = [str(many_cells), "--model", str(tiny_model), "--out", str(out), "--threads", "1"]
    argv += ["--batch-size", "16"]
    child = Child(CLASSIFY_CHILD, "slow-disk", *argv)
    try:
        child.wait_for("CLASSIFYING")
        if when == "inside-the-csv-write":
            child.wait_for("CSV-WRITING")
            time.sleep(0.1)
        else:
            child.wait_for("MODEL-LOADED")
            time.sleep(random.Random(5).uniform(0.2, 1.0))
        lines = child.kill()
    finally:
        child.close()
    assert not any(line.startswith("EXIT") for line in lines), "finished before the kill"
    assert _digest(out) == previous
    left = _assert_only_hidden_temp_files(tmp_path, {"existing.csv"}, "existing.csv")
    if when == "inside-the-csv-write":
        assert left, "killed while writing rows, yet no temporary file was left"


# --------------------------------------------------------------------------------------------
# kill -9 of napari while annotating


ANNOTATE_CHILD = textwrap.dedent(
    """
    import sys, time
    import napari
    from napari_deparray_ctc.napari.session import install_annotation_keys

    export, plan = sys.argv[1], sys.argv[2].split(",")
    viewer = napari.Viewer(show=False)
    layers = viewer.open(export, plugin="napari-deparray-ctc")
    bf = next(layer for layer in layers if layer.metadata["deparray"]["channel"] == "BF")
    ids = bf.metadata["deparray"]["cell_ids"]
    controller = install_annotation_keys(viewer)
    viewer.layers.selection.active = bf
    keys = viewer.window._qt_viewer._key_map_handler  # presses go through the real bindings
    print("READY", flush=True)
    for step in plan:
        index, key = int(step[:-1]), step[-1]
        viewer.dims.set_current_step(0, index)
        assert keys.press_key(key), key
        keys.release_key(key)
        label = {"c": "CTC", "w": "WBC", "u": ""}[key]
        print("ANNOTATED", ids[index], label or "-", controller.last_message, flush=True)
        time.sleep(0.02)
    print("ALL-DONE", flush=True)
    time.sleep(600)
    """
)


def _display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@pytest.mark.time_limit(600)
@pytest.mark.skipif(not _display_available(), reason="napari's canvas needs a display (Xvfb)")
def test_kill_of_napari_keeps_every_annotation_made_before(tmp_path) -> None:
    from napari_deparray_ctc.core.annotations.sidecars import SIDECAR_NAME, load_annotations
    from napari_deparray_ctc.napari.reader import read_deparray

    export = tmp_path / "export"
    write_good_cells(export, 8)
    rng = random.Random(11)
    plan = [f"{rng.randrange(8)}{rng.choice('cwu')}" for _ in range(30)]
    kill_after = rng.randrange(5, 25)
    child = Child(ANNOTATE_CHILD, str(export), ",".join(plan))
    try:
        child.wait_for("READY", timeout=300)
        for _ in range(kill_after):
            child.wait_for("ANNOTATED")
        lines = child.kill()
    finally:
        child.close()
    made = [line.split()[1:3] for line in lines if line.startswith("ANNOTATED")]
    assert len(made) >= kill_after and "ALL-DONE" not in lines
    assert all("(saved to" in line for line in lines if line.startswith("ANNOTATED"))
    expected: dict[str, set[str | None]] = {}
    for cell_id, label in made:
        expected[cell_id] = {None if label == "-" else label}
    if len(made) < len(plan):  # the next key press may have been saved but not yet printed
        step = plan[len(made)]
        label = {"c": "CTC", "w": "WBC", "u": None}[step[-1]]
        expected.setdefault(f"cell{int(step[:-1]):04d}", {"not annotated"}).add(label)

    # the sidecar holds every annotation made before the kill...
    sidecar = export / SIDECAR_NAME
    saved = load_annotations(sidecar)
    for cell_id, labels in expected.items():
        assert saved.get(cell_id, "not annotated") in labels, (cell_id, labels, saved)
    # ...and opening the export again shows them on the layers
    layers = read_deparray(str(export))
    meta = layers[0][1]["metadata"]["deparray"]
    labels = dict(zip(meta["cell_ids"], meta["labels"], strict=True))
    for cell_id, allowed in expected.items():
        if "not annotated" not in allowed:
            assert labels[cell_id] in allowed, (cell_id, allowed, labels[cell_id])
    _assert_only_hidden_temp_files(
        export, {f"cell{i:04d}.tif" for i in range(8)} | {SIDECAR_NAME}, SIDECAR_NAME
    )
