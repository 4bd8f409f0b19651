"""Classification throughput and memory, measured side by side in one run.

Prints three things:

1. **core vs a plain loop, like for like** — images/s of
   :func:`napari_deparray_ctc.core.inference.classify.classify` against a plain torchvision
   inference loop that does *the same work from the same inputs*, one step after the other:
   for each mini-batch, take the images, :func:`prepare_batch` them (the same normalisation,
   padding and resizing the product applies), run the *same network* under
   ``torch.inference_mode`` and take the ``sigmoid``. Two inputs are compared:

   * ``memory``: the raw 16-bit images, already in memory as 2-D arrays (both sides
     preprocess them);
   * ``files``: one TIFF file per cell on disk, read with ``tifffile.imread`` by both sides
     (the plain loop reads a batch, then prepares it, then infers; ``core`` is given a
     generator that reads the same files with the same call).

   The ratio ``core / plain`` of each is the figure of issue 19 (goal >= 1.0x): ``core``
   gains by reading and preparing the next batch in a background thread while the network
   runs on the current one (``core.inference.prefetch``); the plain loop does not overlap.
   It also prints the plain loop over **pre-built tensors** (inference only, no reading or
   preprocessing inside the timing): ``core`` over it says how much of the reading and
   preprocessing is still not hidden behind inference (1.0x: all of it hidden).

   Earlier versions of this script compared ``core`` given *already normalised images* with
   the plain loop given *pre-built tensors*: ``core`` then normalised and resized again what
   the plain loop never touched, so that ratio (0.88-0.97x) counted work only one side did.

   Each repeat runs every side once, plain and core of an input next to each other (the
   order of the sides alternates each repeat); the ratio is the **median over repeats of the
   ratio within a repeat**, so a burst of load from other processes (this machine's two
   cores are shared) spoils one pair, not the figure. The best of each side is printed too.
2. **FLOP ceiling** — the machine's measured float32 matmul GFLOP/s (``torch.mm`` of large
   matrices) divided by the network's FLOPs per image (counted with
   ``torch.utils.flop_counter.FlopCounterMode``) gives a ceiling in images/s; the script prints
   achieved / ceiling for the inference-only plain loop and for core.
3. **peak RSS** — ``deparray-ctc classify`` on a synthetic export of ``--rss-cells`` cells
   (default 10,000) in a fresh subprocess, measured with ``resource.getrusage`` (``ru_maxrss``)
   of that process; the peak reached *before* the first cell is read (imports + model) is
   printed next to it, so the difference is what streaming 10,000 cells costs. The goal is
   < 1.5 GB.

With ``--json OUT --label NAME`` the results are stored under ``NAME`` in ``OUT`` (other
labels already there are kept), so that a run on the code before a change (``before``) and
one after it (``after``) sit in one file, each with its command.

Usage::

    python benchmarks/bench_classify.py [--arch resnet18] [--size 64] [--n 512]
        [--batch-size 64] [--repeats 7] [--rss-cells 10000] [--skip-rss] [--threads N]
        [--json OUT.json] [--label NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def matmul_gflops(n: int = 2048, min_time_s: float = 2.0) -> float:
    """Best-of float32 ``torch.mm`` throughput in GFLOP/s (2 n^3 FLOPs per product)."""
    import torch

    a = torch.randn(n, n, dtype=torch.float32)
    b = torch.randn(n, n, dtype=torch.float32)
    torch.mm(a, b)  # warm-up
    best = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        torch.mm(a, b)
        dt = time.perf_counter() - t0
        best = max(best, 2 * n**3 / dt / 1e9)
    return best


def flops_per_image(network, image_size: int) -> float:
    """FLOPs of one forward pass of one image (FlopCounterMode counts 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, image_size, image_size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(x)
    return float(counter.get_total_flops())


def plain_loop(network, x, batch_size: int) -> tuple[float, np.ndarray]:
    """Inference only: a plain loop over pre-built tensors. Returns (seconds, probabilities)."""
    import torch

    network.eval()
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out.append(torch.sigmoid(network(x[i : i + batch_size]).reshape(-1)))
    dt = time.perf_counter() - t0
    return dt, torch.cat(out).numpy()


def plain_prepare_loop(
    network, read: Callable[[Any], np.ndarray], items: Sequence, model, batch_size: int
) -> tuple[float, np.ndarray]:
    """The reference: read a batch, prepare it, infer, one step after the other.

    ``read`` turns an item of ``items`` into a 2-D image (the identity for images in memory,
    ``tifffile.imread`` for paths). Returns (seconds, probabilities).
    """
    import torch

    from napari_deparray_ctc.core.inference.preprocess import prepare_batch

    network.eval()
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(items), batch_size):
            images = [read(item) for item in items[i : i + batch_size]]
            x = prepare_batch(images, model.image_size, model.normalisation)
            out.append(torch.sigmoid(network(x).reshape(-1)))
    dt = time.perf_counter() - t0
    return dt, torch.cat(out).numpy()


def core_classify(
    read: Callable[[Any], np.ndarray], items: Sequence, model, batch_size: int
) -> tuple[float, np.ndarray]:
    """core.classify on ``read(item)`` for each item, streamed. Returns (seconds, probabilities)."""
    from napari_deparray_ctc.core.inference.classify import classify

    t0 = time.perf_counter()
    predictions = classify(
        (read(item) for item in items), model, batch_size=batch_size, device="cpu"
    )
    dt = time.perf_counter() - t0
    return dt, np.asarray(predictions.p_ctc)


def _in_memory(image: np.ndarray) -> np.ndarray:
    return image


def measure_throughput(args: argparse.Namespace, model_path: Path, workdir: Path) -> dict:
    import tifffile
    import torch

    from napari_deparray_ctc.core.model.loaded import load_model, prepare_batch
    from napari_deparray_ctc.core.synth import synth_cells

    model = load_model(model_path, device="cpu")
    network = model.network
    raw = [c.channels["BF"] for c in synth_cells(args.n, 0.2, seed=1, image_size=args.size)]
    x = prepare_batch(raw, image_size=model.image_size, normalisation=model.normalisation)
    cell_dir = workdir / "cells"
    cell_dir.mkdir()
    paths = []
    for i, image in enumerate(raw):
        path = cell_dir / f"cell_{i:05d}.tif"
        tifffile.imwrite(path, image)
        paths.append(str(path))
    inputs = {"memory": (_in_memory, raw), "files": (tifffile.imread, paths)}

    # warm-up every side (first-call allocations, oneDNN primitive caches, page cache)
    warm = args.batch_size * 2
    plain_loop(network, x[:warm], args.batch_size)
    for read, items in inputs.values():
        plain_prepare_loop(network, read, items, model, args.batch_size)
        core_classify(read, items[:warm], model, args.batch_size)

    seconds: dict[str, list[float]] = {}
    probabilities: dict[str, np.ndarray] = {}
    sides = ["tensors"] + [f"{who} {where}" for where in inputs for who in ("plain", "core")]
    for repeat in range(args.repeats):
        # alternate the order, so that no side always runs first after a pause
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            if side == "tensors":
                dt, p = plain_loop(network, x, args.batch_size)
            else:
                who, where = side.split()
                read, items = inputs[where]
                if who == "plain":
                    dt, p = plain_prepare_loop(network, read, items, model, args.batch_size)
                else:
                    dt, p = core_classify(read, items, model, args.batch_size)
            seconds.setdefault(side, []).append(dt)
            probabilities[side] = p
    reference = probabilities["tensors"]
    max_diff = max(float(np.max(np.abs(p - reference))) for p in probabilities.values())

    gflops = matmul_gflops()
    fpi = flops_per_image(network, model.image_size)
    ceiling = gflops * 1e9 / fpi
    n = len(x)
    ips = {side: n / min(times) for side, times in seconds.items()}
    result = {
        "arch": model.arch,
        "image_size": model.image_size,
        "n_images": n,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "plain_tensors_images_per_s": ips["tensors"],
    }
    for where in inputs:
        # each repeat runs plain and core next to each other: the ratio of that pair is
        # measured under the same load; the median over repeats is the figure
        paired = [
            plain_dt / core_dt
            for plain_dt, core_dt in zip(
                seconds[f"plain {where}"], seconds[f"core {where}"], strict=True
            )
        ]
        result[f"plain_{where}_images_per_s"] = ips[f"plain {where}"]
        result[f"core_{where}_images_per_s"] = ips[f"core {where}"]
        result[f"core_vs_plain_{where}"] = float(np.median(paired))
        result[f"core_vs_plain_{where}_per_repeat"] = paired
        result[f"core_vs_plain_{where}_best_of"] = ips[f"core {where}"] / ips[f"plain {where}"]
        result[f"core_{where}_vs_plain_tensors"] = float(
            np.median(np.array(seconds["tensors"]) / np.array(seconds[f"core {where}"]))
        )
    result.update(
        {
            "max_abs_p_difference": max_diff,
            "matmul_gflops": gflops,
            "flops_per_image": fpi,
            "ceiling_images_per_s": ceiling,
            "plain_tensors_fraction_of_ceiling": ips["tensors"] / ceiling,
            "core_memory_fraction_of_ceiling": ips["core memory"] / ceiling,
        }
    )
    return result


_RSS_SCRIPT = """
import resource, sys
def maxrss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
# everything classify needs, loaded before any cell is read: the peak of this part is the
# fixed cost (torch, torchvision, tifffile, the model); what main() adds is the streaming
from napari_deparray_ctc.cli import main
import napari_deparray_ctc.core.inference.classify, napari_deparray_ctc.core.io
from napari_deparray_ctc.core.model.loaded import load_model
model = load_model(sys.argv[sys.argv.index("--model") + 1], device="cpu")
print("BEFORE_KB", maxrss_kb(), flush=True)
rc = main(sys.argv[1:])
print("MAXRSS_KB", maxrss_kb(), flush=True)
sys.exit(rc)
"""


def _run_rss(argv: list[str]) -> tuple[float, float, float]:
    """Run the CLI in a fresh process: (peak MB before reading cells, peak MB, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, *argv], capture_output=True, text=True, check=False
    )
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    values = {
        line.split()[0]: int(line.split()[1])
        for line in proc.stdout.splitlines()
        if line.startswith(("BEFORE_KB", "MAXRSS_KB"))
    }
    return values["BEFORE_KB"] / 1024.0, values["MAXRSS_KB"] / 1024.0, dt


def measure_rss(args: argparse.Namespace, model_path: Path, workdir: Path) -> dict:
    from napari_deparray_ctc.core.synth import write_export

    export = workdir / "rss_export"
    t0 = time.perf_counter()
    write_export(export, n_cells=args.rss_cells, ctc_fraction=0.1, seed=7, layout="multipage")
    synth_s = time.perf_counter() - t0
    print(f"  wrote {args.rss_cells} cells in {synth_s:.0f} s; classifying in a subprocess...")
    csv_path = workdir / "rss_results.csv"
    argv = ["classify", str(export), "--model", str(model_path), "--out", str(csv_path)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    baseline_mb, peak_mb, dt = _run_rss(argv)
    with open(csv_path, encoding="utf-8") as handle:
        rows = sum(1 for _ in handle) - 1
    return {
        "cells": args.rss_cells,
        "csv_rows": rows,
        "peak_rss_mb": peak_mb,
        "baseline_rss_mb": baseline_mb,
        "classify_wall_s": dt,
        "cells_per_s_end_to_end": args.rss_cells / dt,
        "goal_mb": 1536,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=64, help="network input size (px)")
    parser.add_argument("--n", type=int, default=512, help="images per throughput repeat")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rss-cells", type=int, default=10_000)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument(
        "--label",
        default=None,
        help="store the results under this key of --json, keeping the other keys "
        "(e.g. before / after)",
    )
    args = parser.parse_args(argv)

    import torch

    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    results: dict = {
        "command": " ".join(
            ["python", "benchmarks/" + Path(sys.argv[0]).name, *(argv or sys.argv[1:])]
        )
    }
    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        workdir = Path(tmp)
        model_path = workdir / "model.pt"
        network = build_network(args.arch)
        save_model(
            model_path, network, {"arch": args.arch, "threshold": 0.5, "image_size": args.size}
        )

        t = measure_throughput(args, model_path, workdir)
        results["throughput"] = t
        print(
            f"\n[classify throughput] {t['arch']} at {t['image_size']} px, "
            f"{t['n_images']} images, batch {t['batch_size']}, best of {t['repeats']}, "
            f"{t['torch_threads']} torch threads"
        )
        for where, what in (("memory", "raw 16-bit images in memory"), ("files", "TIFF files")):
            print(f"  from {what}: read + prepare_batch + network, the same work on both sides")
            print(
                f"    plain loop (one step after the other): {t[f'plain_{where}_images_per_s']:8.1f} img/s"
            )
            paired = t[f"core_vs_plain_{where}_per_repeat"]
            print(
                f"    core.classify:                         {t[f'core_{where}_images_per_s']:8.1f} img/s"
            )
            print(
                f"    core / plain: median of {len(paired)} side-by-side pairs "
                f"{t[f'core_vs_plain_{where}']:.3f}x (goal >= 1.0x; pairs "
                f"{min(paired):.3f}-{max(paired):.3f}x; best of each side "
                f"{t[f'core_vs_plain_{where}_best_of']:.3f}x)"
            )
        print(
            f"  plain loop over pre-built tensors (inference only): "
            f"{t['plain_tensors_images_per_s']:8.1f} img/s; core from memory reaches (median pair) "
            f"{t['core_memory_vs_plain_tensors']:.3f}x of it, from files "
            f"{t['core_files_vs_plain_tensors']:.3f}x"
        )
        print(f"  max |p - p_plain_tensors| over all sides = {t['max_abs_p_difference']:.2e}")
        print(
            f"\n[FLOP ceiling] matmul {t['matmul_gflops']:.1f} GFLOP/s; "
            f"{t['flops_per_image'] / 1e9:.3f} GFLOP per image -> ceiling "
            f"{t['ceiling_images_per_s']:.1f} img/s"
        )
        print(
            f"  plain loop over tensors: {t['plain_tensors_fraction_of_ceiling']:.1%} of ceiling; "
            f"core from memory: {t['core_memory_fraction_of_ceiling']:.1%} of ceiling"
        )

        if not args.skip_rss:
            print(f"\n[peak memory] deparray-ctc classify on {args.rss_cells} synthetic cells")
            r = measure_rss(args, model_path, workdir)
            results["memory"] = r
            print(
                f"  peak RSS {r['peak_rss_mb']:.0f} MB (goal < {r['goal_mb']} MB); "
                f"of which before the first cell is read (imports + model): "
                f"{r['baseline_rss_mb']:.0f} MB; "
                f"{r['csv_rows']} CSV rows; {r['classify_wall_s']:.0f} s "
                f"({r['cells_per_s_end_to_end']:.0f} cells/s end to end, reading TIFFs included)"
            )
    if args.json:
        from napari_deparray_ctc.core.atomic import atomic_write

        stored: dict = results
        if args.label:
            try:
                with open(args.json, encoding="utf-8") as handle:
                    stored = json.load(handle)
            except (OSError, ValueError):
                stored = {}
            stored = {k: v for k, v in stored.items() if isinstance(v, dict) and "command" in v}
            stored[args.label] = results
        with atomic_write(args.json, "w") as handle:
            json.dump(stored, handle, indent=2)
        print(
            f"\nresults written to {args.json}" + (f" under {args.label!r}" if args.label else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
