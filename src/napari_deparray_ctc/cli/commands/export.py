"""``deparray-ctc export``: a portable ONNX copy of a model file (``core.portable``)."""

from __future__ import annotations

import argparse

HELP = "export a model file to ONNX (needs the onnx extra)"
DESCRIPTION = """
Write the model as one ONNX file for onnxruntime and other runtimes. Input 'bf': prepared
bright-field images (N, 1, S, S), float32 in [0, 1] (per-image 1st-99th percentile scaling,
padded square, resized to S); outputs 'p_ctc' (calibrated, the calibration is inside the graph)
and 'logit'. The model file's metadata, the threshold included, is stored in the ONNX metadata
'napari_deparray_ctc'.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``deparray-ctc export``."""
    p.add_argument("model", metavar="MODEL", help="model file (.pt)")
    p.add_argument("out", metavar="OUT", help="ONNX file to write (.onnx)")


def run(args: argparse.Namespace) -> int:
    """Export and say where."""
    import os

    from napari_deparray_ctc.cli.data import CliError
    from napari_deparray_ctc.core.model.portable import export_onnx

    if not os.path.isfile(args.model):
        raise CliError(args.model, "model file not found")
    path = export_onnx(args.model, args.out)
    print(f"ONNX model written to {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    return 0
