"""Classification throughput on a GPU: core vs a plain torchvision loop vs the FLOP ceiling.

Measured side by side in one run, on the same network and the same pre-built tensors:

* ``plain fp32``: a plain torchvision inference loop (``inference_mode``, ``sigmoid``);
* the network path of ``core`` (``LoadedModel.predict_proba``, float16 autocast on CUDA), and
  the variants tried for it: bfloat16 autocast, ``channels_last`` memory format (with each
  autocast), and ``torch.compile`` of the best of those;
* ``core end to end``: ``core.classify`` on raw 16-bit images (CPU preprocessing included);
* the **ceiling**: the best bf16 (and fp16) matmul TFLOP/s measured on this card, divided by
  the network's FLOPs per image (``FlopCounterMode``), in images/s.

Every variant's probabilities are compared with ``plain fp32`` (max abs difference), and the
fastest variant within 0.01 of it is printed as the one to keep. ``--device cpu --n 256`` runs
the same code on a CPU (a check of the script; the figures then say nothing about GPUs).

Usage::

    python benchmarks/gpu_bench.py --json /tmp/gpu_bench.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_tflops(device: str, dtype, n: int, seconds: float = 1.5) -> float:
    """Best-of ``torch.mm`` throughput (2 n^3 FLOPs per product) in TFLOP/s."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    _sync(device)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        _sync(device)
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - t0) / 1e12)
    return best


def flops_per_image(network, size: int, device: str) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, size, size, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(x)
    return float(counter.get_total_flops())


def run_loop(
    network, x, batch: int, device: str, dtype=None, channels_last=False
) -> tuple[float, np.ndarray]:
    """Seconds and probabilities of one pass over ``x`` (a CPU tensor) in batches."""
    import torch

    out = []
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            xb = x[i : i + batch].to(device, non_blocking=True)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(
                device_type=device.split(":")[0],
                dtype=dtype or torch.float32,
                enabled=dtype is not None,
            ):
                logits = network(xb)
            out.append(torch.sigmoid(logits.float().reshape(-1)))
        probs = torch.cat(out).cpu().numpy()
    _sync(device)
    return time.perf_counter() - t0, probs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul-n", type=int, default=8192)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import copy

    import torch

    from napari_deparray_ctc.core.inference.classify import classify
    from napari_deparray_ctc.core.inference.preprocess import prepare_batch
    from napari_deparray_ctc.core.model.loaded import LoadedModel
    from napari_deparray_ctc.core.model.network import build_network
    from napari_deparray_ctc.core.synth import synth_cells

    device = args.device
    torch.manual_seed(0)
    network = build_network("resnet18").eval().to(device)
    raw = [c.channels["BF"] for c in synth_cells(min(args.n, 1024), 0.2, seed=1)]
    raw = (raw * (args.n // len(raw) + 1))[: args.n]
    x = prepare_batch(raw, args.size)
    if device.startswith("cuda"):
        x = x.pin_memory()
    model = LoadedModel(
        network, {"arch": "resnet18", "threshold": 0.5, "image_size": args.size}, device=device
    )
    fp16 = torch.float16 if device.startswith("cuda") else torch.bfloat16
    variants = {
        "plain fp32": dict(net=network),
        "core network path (fp16 autocast)": dict(net=network, dtype=fp16),
        "bf16 autocast": dict(net=network, dtype=torch.bfloat16),
    }
    cl_net = copy.deepcopy(network).to(memory_format=torch.channels_last)
    variants["channels_last + fp16"] = dict(net=cl_net, dtype=fp16, channels_last=True)
    variants["channels_last + bf16"] = dict(net=cl_net, dtype=torch.bfloat16, channels_last=True)

    def best_of(spec) -> tuple[float, np.ndarray]:
        run_loop(
            spec["net"],
            x[: args.batch_size * 2],
            args.batch_size,
            device,
            spec.get("dtype"),
            spec.get("channels_last", False),
        )
        times, probs = [], None
        for _ in range(args.repeats):
            dt, probs = run_loop(
                spec["net"],
                x,
                args.batch_size,
                device,
                spec.get("dtype"),
                spec.get("channels_last", False),
            )
            times.append(dt)
        return min(times), probs

    results: dict[str, dict] = {}
    reference = None
    for name, spec in variants.items():
        seconds, probs = best_of(spec)
        reference = probs if reference is None else reference
        results[name] = {
            "images_per_s": args.n / seconds,
            "max_abs_diff": float(np.abs(probs - reference).max()),
        }
    if not args.no_compile:
        fastest = max(
            (k for k in results if k != "plain fp32"), key=lambda k: results[k]["images_per_s"]
        )
        spec = dict(variants[fastest])
        t0 = time.perf_counter()
        spec["net"] = torch.compile(spec["net"])
        run_loop(
            spec["net"],
            x[: args.batch_size * 2],
            args.batch_size,
            device,
            spec.get("dtype"),
            spec.get("channels_last", False),
        )
        compile_s = time.perf_counter() - t0
        seconds, probs = best_of(spec)
        results[f"torch.compile({fastest})"] = {
            "images_per_s": args.n / seconds,
            "max_abs_diff": float(np.abs(probs - reference).max()),
            "compile_s": compile_s,
        }
    # core end to end: raw 16-bit images, CPU preprocessing included
    classify(raw[: args.batch_size], model, batch_size=args.batch_size)
    t0 = time.perf_counter()
    classify(raw, model, batch_size=args.batch_size)
    results["core.classify end to end (raw images)"] = {
        "images_per_s": args.n / (time.perf_counter() - t0)
    }

    flops = flops_per_image(network, args.size, device)
    ceilings = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        try:
            ceilings[name] = matmul_tflops(
                device, dtype, args.matmul_n if device != "cpu" else 1024
            )
        except RuntimeError:
            continue
    top = max(ceilings.values())
    ceiling_images = top * 1e12 / flops
    plain = results["plain fp32"]["images_per_s"]
    print(
        f"device {device} ({torch.cuda.get_device_name() if device.startswith('cuda') else 'CPU'}); "
        f"{args.n} images of {args.size} px, batch {args.batch_size}, best of {args.repeats}"
    )
    print(
        "matmul ceiling: "
        + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in ceilings.items())
        + f"; network {flops / 1e9:.3f} GFLOP per image -> ceiling {ceiling_images:,.0f} images/s"
    )
    for name, r in results.items():
        extra = f", max |dp| vs fp32 {r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
        comp = f", compile {r['compile_s']:.0f} s" if "compile_s" in r else ""
        print(
            f"  {name:42s} {r['images_per_s']:12,.0f} images/s  {r['images_per_s'] / plain:5.2f}x plain"
            f"  {r['images_per_s'] / ceiling_images:6.1%} of ceiling{extra}{comp}"
        )
    keep = max(
        (k for k, r in results.items() if r.get("max_abs_diff", 1) <= 0.01),
        key=lambda k: results[k]["images_per_s"],
    )
    print(f"keep: {keep}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "args": vars(args),
                    "results": results,
                    "ceilings_tflops": ceilings,
                    "flops_per_image": flops,
                    "ceiling_images_per_s": ceiling_images,
                    "keep": keep,
                },
                handle,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
