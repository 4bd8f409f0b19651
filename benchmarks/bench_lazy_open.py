"""Exports larger than memory: open 100,000 cells lazily, step through them, classify them.

Issue 14 asks that an export of 100,000 cells or more opens lazily in napari (dask arrays read
on demand, never the full size at open time), and that opening it, stepping through cells and
classifying it keep the peak RSS under 1.5 GB. This script measures it, side by side.

1. **Export** (reused from ``--cache`` when present). 64 distinct synthetic cells are rendered
   with :func:`napari_deparray_ctc.core.synth.write_export` and written under new names up to
   ``--cells`` files (rendering 100,000 cells would take longer than everything measured):

   * ``multipage``: one TIFF per cell (BF, DAPI, PE, APC pages), 100,000 files;
   * ``stack``: one OME-TIFF (N, C, Y, X) with the cells on a modulo ("other") axis.
2. **Discovery**: :func:`~napari_deparray_ctc.core.io.discover_cells` on the folder (names
   only, no pixels): seconds.
3. **Open**: the napari reader (:func:`~napari_deparray_ctc.napari.reader.read_deparray`),
   which returns one lazy dask layer per channel: seconds and the RSS after it.
4. **Step**: 1,000 consecutive cells shown one after another, each read from every channel
   layer (``np.asarray(layer[i])``, what napari does to show a cell): seconds in all and the
   slowest step (the first cell of a chunk reads the whole chunk).
5. **Classify**: the BF layer streamed chunk by chunk through
   :func:`napari_deparray_ctc.core.inference.classify.classify` against a plain loop over a numpy array
   of the same cells already in memory (an untrained ResNet-18 saved with
   :func:`~napari_deparray_ctc.core.model.loaded.save_model`; one torch thread): cells/s and ratio.

Each phase runs in a fresh Python process and reports its peak RSS (``VmHWM`` on Linux; not
``ru_maxrss``, which a child inherits from its parent across ``exec``), so the figures of one
phase do not include another's. Usage (from the repository root)::

    nice python benchmarks/bench_lazy_open.py                    # 100,000 cells, both layouts
    nice python benchmarks/bench_lazy_open.py --cells 20000 --classify-cells 2000
    nice python benchmarks/bench_lazy_open.py --layouts multipage --classify-cells 100000

The first run writes the exports (about 3.3 GB each at 64 px) into ``--cache``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

GOAL_MB = 1536.0
CHANNELS = ("BF", "DAPI", "PE", "APC")
TEMPLATES = 64


# --------------------------------------------------------------------------------------------
# data


def _templates(folder: Path, image_size: int):
    """64 rendered multipage cells: their file bytes and their (C, Y, X) pixels."""
    import tifffile

    from napari_deparray_ctc.core.synth import write_export

    rendered = folder / "templates"
    if not rendered.is_dir():
        write_export(rendered, TEMPLATES, ctc_fraction=0.3, seed=11, image_size=image_size)
    files = sorted(rendered.glob("cell*.tif"))
    return [f.read_bytes() for f in files], [tifffile.imread(f, key=slice(None)) for f in files]


def make_multipage(folder: Path, n_cells: int, image_size: int) -> Path:
    export = folder / f"multipage-{n_cells}-{image_size}px"
    done = export / ".complete"
    if done.is_file():
        return export
    contents, _ = _templates(folder, image_size)
    export.mkdir(parents=True, exist_ok=True)
    for index in range(n_cells):
        (export / f"cell{index:06d}.tif").write_bytes(contents[index % len(contents)])
    done.write_text("ok")
    return export


def make_stack(folder: Path, n_cells: int, image_size: int) -> Path:
    import tifffile

    export = folder / f"stack-{n_cells}-{image_size}px"
    path = export / "cells.ome.tif"
    done = export / ".complete"
    if done.is_file():
        return export
    _, planes = _templates(folder, image_size)
    export.mkdir(parents=True, exist_ok=True)

    def pages():
        for index in range(n_cells):
            yield from planes[index % len(planes)]

    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(
            pages(),
            shape=(n_cells, len(CHANNELS), image_size, image_size),
            dtype=planes[0].dtype,
            photometric="minisblack",
            metadata={"axes": "QCYX", "Channel": {"Name": list(CHANNELS)}},
        )
    done.write_text("ok")
    return export


# --------------------------------------------------------------------------------------------
# phases, each in a fresh process

PHASE = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    phase, export, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

    def peak_mb():
        # VmHWM: this process's own high-water mark (ru_maxrss keeps the parent's across exec)
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    out = {"phase": phase}
    if phase == "discover":
        from napari_deparray_ctc.core.io import discover_cells
        start = time.perf_counter()
        sources, skipped = discover_cells(export)
        out.update(seconds=time.perf_counter() - start, cells=len(sources), skipped=len(skipped))
    else:
        from napari_deparray_ctc.napari.reader import read_deparray
        start = time.perf_counter()
        layers = read_deparray(export)
        out["open_s"] = time.perf_counter() - start
        out["open_peak_mb"] = peak_mb()
        data = [layer[0] for layer in layers]
        out["lazy"] = type(data[0]).__module__.startswith("dask")
        out["shape"] = list(data[0].shape)
        n = data[0].shape[0]
        if phase == "step":
            first = n // 2
            steps = []
            for index in range(first, min(n, first + args["steps"])):
                tick = time.perf_counter()
                for array in data:
                    np.asarray(array[index])
                steps.append(time.perf_counter() - tick)
            out.update(steps=len(steps), step_total_s=sum(steps), step_max_s=max(steps),
                       step_median_ms=1000 * sorted(steps)[len(steps) // 2])
        else:
            import torch
            torch.set_num_threads(1)
            from napari_deparray_ctc.core.inference.classify import classify
            from napari_deparray_ctc.core.model.loaded import load_model
            model = load_model(args["model"], device="cpu")
            count = min(n, args["classify_cells"])
            bf = data[0][:count]
            if phase == "classify-lazy":
                def cells():
                    for block in bf.blocks:  # one chunk at a time: one read per chunk
                        yield from np.asarray(block)
                images = cells()
            else:  # the plain loop: the same cells, already in memory
                images = np.asarray(bf)
                out["in_memory_mb"] = images.nbytes / 1024**2
            start = time.perf_counter()
            predictions = classify(images, model, batch_size=64, device="cpu")
            seconds = time.perf_counter() - start
            out.update(cells=len(predictions.p_ctc), classify_s=seconds,
                       cells_per_s=len(predictions.p_ctc) / seconds)
    out["peak_mb"] = peak_mb()
    print(json.dumps(out))
    """
)


def run_phase(phase: str, export: Path, args: dict) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-c", PHASE, phase, str(export), json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def make_model(folder: Path, image_size: int) -> Path:
    import torch

    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    torch.manual_seed(0)
    path = folder / f"untrained_resnet18_{image_size}px.pt"
    if not path.is_file():
        metadata = {"arch": "resnet18", "threshold": 0.5, "image_size": image_size}
        save_model(path, build_network("resnet18"), metadata)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--layouts", nargs="+", default=["multipage", "stack"])
    parser.add_argument("--steps", type=int, default=1000, help="cells stepped through")
    parser.add_argument(
        "--classify-cells", type=int, default=5000, help="cells classified both ways"
    )
    parser.add_argument(
        "--cache",
        default=os.path.join(tempfile.gettempdir(), "deparray-bench-lazy"),
        help="folder for the generated exports (reused)",
    )
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    model = make_model(cache, args.image_size)
    options = {"steps": args.steps, "classify_cells": args.classify_cells, "model": str(model)}
    results: dict = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
    for layout in args.layouts:
        start = time.perf_counter()
        make = make_multipage if layout == "multipage" else make_stack
        export = make(cache, args.cells, args.image_size)
        print(f"\n[{layout}] {args.cells:,} cells at {args.image_size} px in {export}")
        print(f"  export ready in {time.perf_counter() - start:.1f} s")
        found = {phase: run_phase(phase, export, options) for phase in
                 ("discover", "step", "classify-lazy", "classify-numpy")}  # fmt: skip
        results[layout] = found
        d, s = found["discover"], found["step"]
        lazy, plain = found["classify-lazy"], found["classify-numpy"]
        print(f"  discovery (names only): {d['seconds']:.2f} s for {d['cells']:,} cells")
        print(
            f"  open (lazy={s['lazy']}, {s['shape']}): {s['open_s']:.2f} s, "
            f"peak RSS {s['open_peak_mb']:.0f} MB"
        )
        print(
            f"  step through {s['steps']} cells x 4 layers: {s['step_total_s']:.2f} s "
            f"(median {s['step_median_ms']:.1f} ms, slowest {1000 * s['step_max_s']:.0f} ms); "
            f"peak RSS {s['peak_mb']:.0f} MB"
        )
        print(
            f"  classify {lazy['cells']:,} cells streamed from the lazy layer: "
            f"{lazy['cells_per_s']:.0f} cells/s, peak RSS {lazy['peak_mb']:.0f} MB"
        )
        print(
            f"  classify the same cells from a numpy array in memory "
            f"({plain['in_memory_mb']:.0f} MB): {plain['cells_per_s']:.0f} cells/s, "
            f"peak RSS {plain['peak_mb']:.0f} MB"
        )
        ratio = lazy["cells_per_s"] / plain["cells_per_s"]
        worst = max(s["peak_mb"], lazy["peak_mb"])
        print(
            f"  lazy / in-memory throughput: {ratio:.2f}x; lazy peak RSS {worst:.0f} MB "
            f"(goal < {GOAL_MB:.0f} MB: {'met' if worst < GOAL_MB else 'NOT met'})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
