"""Classification throughput and memory, measured side by side in one run.

Prints three things:

1. **core vs plain loop** — images/s of :func:`napari_deparray_ctc.core.inference.classify.classify`
   against a plain torchvision inference loop (``torch.inference_mode`` + ``sigmoid`` over
   mini-batches) running the *same network* on the *same pre-built tensors*. ``core`` is given
   the pre-built, already normalised images as 2-D arrays (so it still runs its own
   normalisation, padding and batching: that overhead is what the ratio measures; goal >= 0.9x).
   It also prints ``core`` on the raw 16-bit images (the full user path, preprocessing included).
   Repetitions are interleaved (plain, core, plain, core, ...) and the best of each is kept, so
   load from other processes affects both sides alike.
2. **FLOP ceiling** — the machine's measured float32 matmul GFLOP/s (``torch.mm`` of large
   matrices) divided by the network's FLOPs per image (counted with
   ``torch.utils.flop_counter.FlopCounterMode``) gives a ceiling in images/s; the script prints
   achieved / ceiling for both the plain loop and core.
3. **peak RSS** — ``deparray-ctc classify`` on a synthetic export of ``--rss-cells`` cells
   (default 10,000) in a fresh subprocess, measured with ``resource.getrusage`` (``ru_maxrss``)
   of that process; the peak reached *before* the first cell is read (imports + model) is
   printed next to it, so the difference is what streaming 10,000 cells costs. The goal is
   < 1.5 GB.

Usage::

    python benchmarks/bench_classify.py [--arch resnet18] [--size 64] [--n 512]
        [--batch-size 64] [--repeats 5] [--rss-cells 10000] [--skip-rss] [--threads N]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    """The reference: a plain torchvision inference loop. Returns (seconds, probabilities)."""
    import torch

    network.eval()
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out.append(torch.sigmoid(network(x[i : i + batch_size]).reshape(-1)))
    dt = time.perf_counter() - t0
    return dt, torch.cat(out).numpy()


def core_classify(images, model, batch_size: int) -> tuple[float, np.ndarray]:
    """core.classify on a list of 2-D arrays. Returns (seconds, probabilities)."""
    from napari_deparray_ctc.core.inference.classify import classify

    t0 = time.perf_counter()
    predictions = classify(images, model, batch_size=batch_size, device="cpu")
    dt = time.perf_counter() - t0
    return dt, np.asarray(predictions.p_ctc)


def measure_throughput(args: argparse.Namespace, model_path: Path) -> dict:
    import torch

    from napari_deparray_ctc.core.model.loaded import load_model, prepare_batch
    from napari_deparray_ctc.core.synth import synth_cells

    model = load_model(model_path, device="cpu")
    network = model.network
    raw = [c.channels["BF"] for c in synth_cells(args.n, 0.2, seed=1, image_size=args.size)]
    x = prepare_batch(raw, image_size=model.image_size, normalisation=model.normalisation)
    prebuilt = [x[i, 0].numpy() for i in range(len(x))]

    # warm-up both paths (first-call allocations, oneDNN primitive caches)
    plain_loop(network, x[: args.batch_size * 2], args.batch_size)
    core_classify(prebuilt[: args.batch_size * 2], model, args.batch_size)

    plain_s, core_s, core_raw_s = [], [], []
    p_plain = p_core = None
    for repeat in range(args.repeats):
        # alternate the order, so that neither side always runs first after a pause
        steps = ["plain", "core", "raw"] if repeat % 2 == 0 else ["raw", "core", "plain"]
        for step in steps:
            if step == "plain":
                dt, p_plain = plain_loop(network, x, args.batch_size)
                plain_s.append(dt)
            elif step == "core":
                dt, p_core = core_classify(prebuilt, model, args.batch_size)
                core_s.append(dt)
            else:
                dt, _ = core_classify(raw, model, args.batch_size)
                core_raw_s.append(dt)
    max_diff = float(np.max(np.abs(p_plain - p_core)))

    gflops = matmul_gflops()
    fpi = flops_per_image(network, model.image_size)
    ceiling = gflops * 1e9 / fpi
    n = len(x)
    plain_ips, core_ips, core_raw_ips = n / min(plain_s), n / min(core_s), n / min(core_raw_s)
    return {
        "arch": model.arch,
        "image_size": model.image_size,
        "n_images": n,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "plain_images_per_s": plain_ips,
        "core_images_per_s": core_ips,
        "core_raw_images_per_s": core_raw_ips,
        "core_vs_plain": core_ips / plain_ips,
        "core_raw_vs_plain": core_raw_ips / plain_ips,
        "max_abs_p_difference": max_diff,
        "matmul_gflops": gflops,
        "flops_per_image": fpi,
        "ceiling_images_per_s": ceiling,
        "plain_fraction_of_ceiling": plain_ips / ceiling,
        "core_fraction_of_ceiling": core_ips / ceiling,
    }


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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rss-cells", type=int, default=10_000)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from napari_deparray_ctc.core.model.loaded import build_network, save_model

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    results: dict = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        workdir = Path(tmp)
        model_path = workdir / "model.pt"
        network = build_network(args.arch)
        save_model(
            model_path, network, {"arch": args.arch, "threshold": 0.5, "image_size": args.size}
        )

        t = measure_throughput(args, model_path)
        results["throughput"] = t
        print(
            f"\n[classify throughput] {t['arch']} at {t['image_size']} px, "
            f"{t['n_images']} images, batch {t['batch_size']}, best of {t['repeats']}"
        )
        print(f"  plain torchvision loop (pre-built tensors): {t['plain_images_per_s']:8.1f} img/s")
        print(
            f"  core.classify (same pre-built images):      {t['core_images_per_s']:8.1f} img/s"
            f"  -> ratio {t['core_vs_plain']:.3f}x (goal >= 0.9x)"
        )
        print(
            f"  core.classify (raw 16-bit images, full preprocessing): "
            f"{t['core_raw_images_per_s']:8.1f} img/s -> {t['core_raw_vs_plain']:.3f}x"
        )
        print(f"  max |p_core - p_plain| = {t['max_abs_p_difference']:.2e}")
        print(
            f"\n[FLOP ceiling] matmul {t['matmul_gflops']:.1f} GFLOP/s; "
            f"{t['flops_per_image'] / 1e9:.3f} GFLOP per image -> ceiling "
            f"{t['ceiling_images_per_s']:.1f} img/s"
        )
        print(
            f"  plain loop: {t['plain_fraction_of_ceiling']:.1%} of ceiling; "
            f"core: {t['core_fraction_of_ceiling']:.1%} of ceiling"
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

        with atomic_write(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
