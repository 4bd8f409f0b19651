"""Portable models: export a model file to ONNX (runs with onnxruntime, no PyTorch needed).

The ONNX graph takes the **prepared** bright-field batch, ``float32`` ``(N, 1, S, S)`` with
values in [0, 1] (input ``bf``), and has two outputs:

* ``p_ctc`` ``(N,)``: the calibrated P(CTC), with the model's calibration (Platt, isotonic or
  none) inside the graph, so it equals ``LoadedModel.predict_proba``;
* ``logit`` ``(N,)``: the raw logit (mean over an ensemble's members), before calibration.

What the graph does not do is the preprocessing (``core.preprocess``): per-image percentile
normalisation to [0, 1], padding to a square with the border median, and a bilinear,
antialiased resize to ``S`` (or the physical-scale canvas). The model file's metadata, the
threshold included, is stored in the ONNX file as the metadata property
``napari_deparray_ctc`` (JSON) so nothing is lost; :func:`onnx_metadata` reads it back.
Needs the ``onnx`` extra (``onnx``, ``onnxscript``, ``onnxruntime``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_deparray_ctc.core.errors import DeparrayError

__all__ = ["METADATA_KEY", "OnnxExportError", "export_onnx", "onnx_metadata", "onnx_predict_proba"]

#: Name of the ONNX metadata property holding the model file's metadata (JSON).
METADATA_KEY = "napari_deparray_ctc"
#: ONNX opset of the export.
OPSET = 18


class OnnxExportError(DeparrayError):
    """An ONNX export that cannot be done (missing extra, unwritable destination)."""


def _calibrated_module(network, calibration: Mapping[str, Any] | None):
    """The network followed by its calibration: outputs ``(p_ctc, logit)``."""
    import torch

    spec = dict(calibration or {"method": "none"})
    method = spec.get("method", "none")

    class Calibrated(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network
            if method == "platt":
                self.register_buffer(
                    "ab", torch.tensor([spec["a"], spec["b"]], dtype=torch.float32)
                )
            elif method == "isotonic":
                x = torch.tensor(spec["x"], dtype=torch.float32)
                y = torch.tensor(spec["y"], dtype=torch.float32)
                width = x[1:] - x[:-1]
                # np.interp as a sum of clamped ramps: y0 + sum_k slope_k (clamp(z, x_k, x_k+1) - x_k)
                slope = torch.where(width > 0, (y[1:] - y[:-1]) / width.clamp(min=1e-12), 0.0)
                self.register_buffer("lo", x[:-1])
                self.register_buffer("hi", x[1:])
                self.register_buffer("slope", slope)
                self.register_buffer("y0", y[:1])

        def forward(self, bf):
            logit = self.network(bf).reshape(-1)
            if method == "platt":
                p = torch.sigmoid(self.ab[0] * logit + self.ab[1])
            elif method == "isotonic":
                z = logit.unsqueeze(1)
                clamped = torch.minimum(torch.maximum(z, self.lo), self.hi)
                p = self.y0 + ((clamped - self.lo) * self.slope).sum(dim=1)
            else:
                p = torch.sigmoid(logit)
            return p, logit

    return Calibrated().eval()


def export_onnx(model_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Export a model file to one self-contained ONNX file (written atomically).

    Parameters
    ----------
    model_path
        A model file (``.pt``) written by training.
    out
        The ONNX file to write; its folder must exist.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    ModelFileError
        ``model_path`` is not a usable model file.
    OnnxExportError
        The ``onnx`` extra is not installed, or ``out`` cannot be written.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401
    except ImportError:
        raise OnnxExportError(
            out, "ONNX export needs the onnx extra: pip install 'napari-deparray-ctc[onnx]'"
        ) from None
    import contextlib
    import io
    import tempfile
    import warnings

    import torch

    from napari_deparray_ctc.core.model.loaded import load_model

    out = Path(out)
    if not out.parent.is_dir():
        raise OnnxExportError(out, f"the folder {out.parent} does not exist")
    model = load_model(model_path, device="cpu")
    module = _calibrated_module(model.network, model.calibration)
    example = torch.rand(2, 1, model.image_size, model.image_size)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=out.parent, prefix=f".{out.name}.")
    os.close(fd)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                input_names=["bf"],
                output_names=["p_ctc", "logit"],
                dynamic_shapes=({0: torch.export.Dim("n", min=1, max=65536)},),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
        proto = program.model_proto
        meta = {
            **model.metadata,
            "onnx": {
                "inputs": "bf: prepared (N, 1, S, S) float32 in [0, 1]",
                "outputs": ["p_ctc (calibrated)", "logit"],
            },
        }
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        onnx.save_model(proto, tmp, save_as_external_data=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a model file is not
        os.replace(tmp, out)
    except OSError as exc:
        raise OnnxExportError(out, f"could not be written ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def onnx_metadata(path: str | os.PathLike) -> dict:
    """The model metadata stored in an exported ONNX file (``{}`` when there is none)."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    return {}


def onnx_predict_proba(path: str | os.PathLike, batch: Any) -> np.ndarray:
    """Calibrated P(CTC) of a prepared batch with onnxruntime (for checks and scripts)."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
    return session.run(["p_ctc"], {"bf": x})[0].astype(np.float64)
