"""Reader throughput: ``core.io.read_export`` versus bare ``tifffile`` reads of the same files.

Writes a synthetic export of N cells × 4 channels (BF, DAPI, PE, APC; small seeded uint16
patterns) in two layouts into a temporary folder:

* ``perchannel``: ``cell0000_BF.tif``, ``cell0000_DAPI.tif``, ... (4 files per cell);
* ``multipage``: ``cell0000.tif`` with one page per channel, each page its own series and named
  by the ``PageName`` tag.

Then, in the same run and alternating, it times

* **bare**: ``tifffile.imread`` of every file (all pages: ``key=slice(None)`` for multipage),
  keeping every array until the end as a reader returning the pixels must, i.e. the least any
  reader has to do;
* **bare, discarding**: the same, dropping each array once read (the baseline of earlier
  runs; it spares the allocator and the garbage collector the growing set of live objects, which
  no reader that returns its cells can), shown beside it;
* **reader**: ``read_export(folder)``, which also discovers the files, groups channels into
  cells, names channels, checks headers and values and builds ``Cell`` objects.

and prints the throughputs (cells/s, best of the repeats and median) and the ratio
reader / bare (the goal is >= 0.95 on every layout; the ratio against the discarding read too), from wall-clock time and from this
process's CPU time (the CPU-time figures are steadier on a machine shared with other work).
Run::

    python benchmarks/bench_reader.py              # 1,000 cells, 5 repeats
    python benchmarks/bench_reader.py --cells 200 --repeats 3 --size 96
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_deparray_ctc.core.io import read_export

CHANNELS = ("BF", "DAPI", "PE", "APC")


def write_exports(root: Path, n_cells: int, size: int, seed: int = 0) -> dict[str, list[Path]]:
    """Write both layouts; return the files of each layout in reading order."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4) ** 2
    files: dict[str, list[Path]] = {"perchannel": [], "multipage": []}
    (root / "perchannel").mkdir()
    (root / "multipage").mkdir()
    for cell in range(n_cells):
        planes = []
        for channel in range(len(CHANNELS)):
            noise = rng.integers(0, 200, size=(size, size))
            planes.append((1000 + 800 * channel * disc + noise).astype(np.uint16))
        for channel, plane in zip(CHANNELS, planes, strict=True):
            path = root / "perchannel" / f"cell{cell:04d}_{channel}.tif"
            tifffile.imwrite(path, plane, photometric="minisblack")
            files["perchannel"].append(path)
        path = root / "multipage" / f"cell{cell:04d}.tif"
        with tifffile.TiffWriter(path) as tif:
            for channel, plane in zip(CHANNELS, planes, strict=True):
                tif.write(plane, photometric="minisblack", extratags=[(285, "s", 0, channel, True)])
        files["multipage"].append(path)
    return files


def bare_read(layout: str, paths: list[Path], keep: bool = True) -> int:
    """Read every file with tifffile alone; return the number of planes.

    ``keep``: hold every array read until the end, as any reader that returns the pixels
    must (the reader's cells hold theirs); ``False`` drops each array once read, which
    spares the allocator and the garbage collector the growing set of live objects.
    """
    planes = 0
    kept: list[np.ndarray] = []
    if layout == "perchannel":
        for path in paths:
            array = tifffile.imread(path)
            planes += 1
            if keep:
                kept.append(array)
    else:
        for path in paths:
            array = tifffile.imread(path, key=slice(None))
            planes += len(array)
            if keep:
                kept.append(array)
    return planes


def reader_read(folder: Path) -> int:
    """Read the folder with the plugin's reader; return the number of planes."""
    export = read_export(folder)
    assert not export.skipped, export.skipped
    return sum(len(cell.channels) for cell in export.cells)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the figures (every repeat) to this JSON file")
    args = parser.parse_args(argv)
    interpreter = os.path.relpath(sys.executable)  # as run: .venv/bin/python, say
    if interpreter.startswith(".."):
        interpreter = "python"
    report: dict = {
        "command": f"{interpreter} benchmarks/bench_reader.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "cells": args.cells,
        "size": args.size,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "tifffile": tifffile.__version__,
        "layouts": {},
    }

    with tempfile.TemporaryDirectory(prefix="bench-reader-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        files = write_exports(root, args.cells, args.size)
        print(
            f"wrote {args.cells} cells × {len(CHANNELS)} channels ({args.size}×{args.size} "
            f"uint16) in 2 layouts in {time.perf_counter() - start:.1f} s; "
            f"tifffile {tifffile.__version__}, {os.cpu_count()} CPUs"
        )
        for layout in ("perchannel", "multipage"):
            folder = root / layout
            expected = args.cells * len(CHANNELS)
            # warm the page cache and the imports once
            assert bare_read(layout, files[layout]) == expected
            assert reader_read(folder) == expected
            sides = ("bare", "bare_discarding", "reader")
            wall: dict[str, list[float]] = {side: [] for side in sides}
            cpu: dict[str, list[float]] = {side: [] for side in sides}
            for _ in range(args.repeats):
                for name in sides:
                    w0, c0 = time.perf_counter(), time.process_time()
                    if name == "reader":
                        reader_read(folder)
                    else:
                        bare_read(layout, files[layout], keep=name == "bare")
                    cpu[name].append(time.process_time() - c0)
                    wall[name].append(time.perf_counter() - w0)
            report["layouts"][layout] = {"wall_s": wall, "cpu_s": cpu}
            for label, times in (("wall", wall), ("cpu", cpu)):
                best = {k: args.cells / min(v) for k, v in times.items()}
                median = {k: args.cells / statistics.median(v) for k, v in times.items()}
                for baseline, key in (("bare", "ratio"), ("bare_discarding", "ratio_discarding")):
                    report["layouts"][layout][f"{key}_{label}"] = {
                        "best": best["reader"] / best[baseline],
                        "median": median["reader"] / median[baseline],
                        "per_repeat": [
                            b / r for b, r in zip(times[baseline], times["reader"], strict=True)
                        ],
                    }
                print(
                    f"{layout:>10} {label:>4}: bare tifffile {best['bare']:6.0f} cells/s "
                    f"(median {median['bare']:.0f}) | read_export {best['reader']:6.0f} cells/s "
                    f"(median {median['reader']:.0f}) | ratio best "
                    f"{best['reader'] / best['bare']:.2f}, median "
                    f"{median['reader'] / median['bare']:.2f} | against bare tifffile dropping "
                    f"each array ({median['bare_discarding']:.0f} cells/s median): ratio best "
                    f"{best['reader'] / best['bare_discarding']:.2f}, median "
                    f"{median['reader'] / median['bare_discarding']:.2f}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
