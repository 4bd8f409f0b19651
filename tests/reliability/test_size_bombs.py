"""Declared-size bombs (issue 15): every class is refused or read within the per-file budget.

Each hand-made file of :mod:`size_bombs` is opened in a fresh interpreter through every reading
entry point (the napari probe, discovery, ``read_export``, ``iter_cells``), under an address
space cap so that a regression fails instead of swapping. Its peak RSS must stay under
:data:`RSS_BUDGET_MB` and its time under :data:`TIME_BUDGET_S`, and the reason must be words.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from reliability_helpers import run_python
from size_bombs import BOMBS

RSS_BUDGET_MB = 1024
TIME_BUDGET_S = 30

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time, warnings
    resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))
    warnings.simplefilter("ignore")
    from napari_deparray_ctc.core.io import (
        DeparrayReadError, discover_cells, is_probably_deparray, iter_cells, read_export)
    from napari_deparray_ctc.napari.reader import napari_get_reader
    def peak_mb():  # VmHWM: this process's own peak (ru_maxrss keeps the parent's across exec)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    path = sys.argv[1]
    start = time.perf_counter()
    napari_get_reader(path)
    is_probably_deparray(path)
    discover_cells(path)
    skipped = []
    list(iter_cells(path, on_skip=lambda p, r: skipped.append(r)))
    try:
        cells, reason = len(read_export(path).cells), None
    except DeparrayReadError as error:
        cells, reason = 0, error.reason
    print(json.dumps({
        "cells": cells, "reason": reason, "skipped": skipped,
        "seconds": time.perf_counter() - start,
        "peak_mb": peak_mb(),
    }))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc/self/status: Linux")
@pytest.mark.parametrize("name", sorted(BOMBS))
def test_declared_size_bomb_stays_within_budget(name, tmp_path) -> None:
    build, fragment = BOMBS[name]
    path = build(tmp_path / "cell0001.tif")
    assert path.stat().st_size < 4 * 1024**2  # small on disk: the size is only declared
    result = run_python(CHILD, path)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["peak_mb"] < RSS_BUDGET_MB, found
    assert found["seconds"] < TIME_BUDGET_S, found
    if fragment is None:
        assert found["cells"] >= 1 and found["reason"] is None, found
        return
    assert found["cells"] == 0 and fragment in found["reason"], found
    assert all(fragment in reason for reason in found["skipped"]), found
    assert "Error" not in found["reason"] and "None" not in found["reason"], found
