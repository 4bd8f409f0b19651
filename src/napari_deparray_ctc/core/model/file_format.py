"""The model file on disk: its layout, a safe reader and the checks of what it holds.

One ``torch.save`` file holding only plain types and tensors::

    {"format": "napari-deparray-ctc-model", "format_version": 2,
     "metadata": {...JSON-safe...}, "state_dict": {name: tensor}}

It is read only with ``torch.load(weights_only=True)``, which refuses any pickled object other
than tensors and plain containers, so opening a foreign or malicious file never runs code.
Everything else that can go wrong (not a torch file, a text file, truncated, a foreign dict,
an unknown architecture, a newer format, weights that do not fit) raises
:class:`~napari_deparray_ctc.core.errors.ModelFileError` with the file and the reason in
words.

Format versions: 1 = one network, uncalibrated P(CTC); 2 = adds the ``calibration`` of the
logit and ensembles (``metadata["ensemble"]`` members, state-dict keys ``members.<i>.``).
A version-1 reader refuses version-2 files, since their threshold is on the calibrated scale.

Additions within version 2, each read by every version-2 reader (older ones ignore the new
keys and still get a working model from the rest):

* ``metadata["site_profile"]``: a model calibrated for a site
  (``core.inference.site_calibration``). Its calibration and threshold are the top-level
  ``calibration`` and ``threshold``, so an older reader applies them too; the profile says
  where they come from. Checked by :func:`check_site_profile`.
* weights stored as float16 (``metadata["weights_dtype"] == "float16"``), half the size on
  disk; they are read back as float32 (``torch``'s ``load_state_dict`` casts them, so older
  readers load them too).
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
import platform
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_deparray_ctc.core.constants import ARCHITECTURES, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from napari_deparray_ctc.core.errors import ModelFileError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SITE_PROFILE_VERSION",
    "check_site_profile",
    "json_safe",
    "package_versions",
    "read_payload",
    "validate_payload",
]

#: Model file format name and the newest version this package reads and writes.
FORMAT_NAME = "napari-deparray-ctc-model"
FORMAT_VERSION = 2
#: Newest version of ``metadata["site_profile"]`` this package reads and writes.
SITE_PROFILE_VERSION = 1


def json_safe(value: Any, where: str = "metadata") -> Any:
    """Convert numpy scalars/arrays, tuples and paths to JSON types; TypeError otherwise."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)  # plain str: subclasses (e.g. torch's version string) do not unpickle
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where} holds a {type(value).__name__}, which cannot be stored as JSON")


def package_versions() -> dict[str, str]:
    """Versions recorded in every model file (package, torch, torchvision, numpy, python)."""
    import torch
    import torchvision

    from napari_deparray_ctc import __version__

    return {
        "napari_deparray_ctc": str(__version__),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------

_NOT_A_MODEL = "is not a model file, or it is truncated or damaged"


def _head(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(n)


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # a multi-byte character cut at the end of the sample
            head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _looks_like_protocol0_pickle(head: bytes) -> bool:
    """``c<module>\\n<name>\\n``: the GLOBAL opcode of a text-mode (protocol 0) pickle."""
    lines = head.split(b"\n")
    return (
        len(lines) >= 3
        and lines[0].startswith(b"c")
        and lines[0][1:].replace(b".", b"").replace(b"_", b"").isalnum()
        and lines[1].replace(b"_", b"").isalnum()
    )


def _starts_like_a_pickle(head: bytes) -> bool:
    """A torch zip archive (``PK``) or a binary pickle (``PROTO`` opcode, protocols 2-5)."""
    if head[:2] == b"PK" or _looks_like_protocol0_pickle(head):
        return True
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def read_payload(path: Path, map_location: str = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a ModelFileError."""
    import torch

    if not path.exists():
        raise ModelFileError(path, "the file does not exist")
    if not path.is_file():
        raise ModelFileError(path, "is not a file")
    if path.stat().st_size == 0:
        raise ModelFileError(path, "the file is empty")
    head = _head(path)
    if _looks_like_text(head) and not _looks_like_protocol0_pickle(head):
        raise ModelFileError(
            path,
            "is a text file, not a model file (a model file is written by training, "
            "for example model.pt from 'deparray-ctc train')",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc).lower()
        if ("weights only" in text or "weights_only" in text) and _starts_like_a_pickle(head):
            raise ModelFileError(
                path,
                "refused: the file contains pickled Python objects that a model file must not "
                "contain (loading them could run code); nothing in it was executed",
            ) from None
        raise ModelFileError(
            path, f"{_NOT_A_MODEL} (it is neither a torch file nor a pickle)"
        ) from None
    except MemoryError:
        raise
    except Exception:
        raise ModelFileError(path, _NOT_A_MODEL) from None


# --------------------------------------------------------------------------------------------
# checking
# --------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(float(value))
    )


def _check_calibration(path: Path, spec: Any) -> dict | None:
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ModelFileError(path, "the stored calibration is not readable")
    method = spec.get("method")
    if method == "none":
        return dict(spec)
    if method == "platt" and _is_number(spec.get("a")) and _is_number(spec.get("b")):
        return dict(spec)
    if method == "isotonic":
        x, y = spec.get("x"), spec.get("y")
        if (
            isinstance(x, list)
            and isinstance(y, list)
            and len(x) == len(y) >= 2
            and all(_is_number(v) for v in x + y)
            and all(a <= b for a, b in itertools.pairwise(x))
        ):
            return dict(spec)
    raise ModelFileError(path, "the stored calibration is not one this version understands")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_site_profile(path: Path, profile: Any) -> dict | None:
    """A stored site profile, checked (``None`` when there is none).

    A profile of a newer version than this package writes is kept as it is (the card says
    so); one of a known version must name its date, its labelled cells per class and the
    model it came from, else :class:`ModelFileError`.
    """
    if profile is None:
        return None
    unreadable = "the stored site profile (the site calibration) is not readable"
    if not isinstance(profile, Mapping):
        raise ModelFileError(path, unreadable)
    version = profile.get("version")
    if not _is_count(version) or version < 1:
        raise ModelFileError(path, unreadable + " (it has no version)")
    if version > SITE_PROFILE_VERSION:
        return dict(profile)
    counts = profile.get("n_labelled")
    if not (
        isinstance(profile.get("created"), str)
        and isinstance(counts, Mapping)
        and all(_is_count(counts.get(k)) for k in ("CTC", "WBC"))
        and isinstance(profile.get("source_model"), Mapping)
        and _is_count(profile.get("n_cells"))
    ):
        raise ModelFileError(
            path, unreadable + " (its date, labelled cells or source model are missing)"
        )
    return dict(profile)


def validate_payload(path: Path, payload: Any) -> dict:
    """Check the structure of a loaded payload.

    Returns
    -------
    dict
        ``{"metadata": dict, "state_dict": dict, "format_version": int}``.
    """
    import torch

    from napari_deparray_ctc.core.inference.preprocess import check_normalisation

    if not isinstance(payload, Mapping):
        kind = {list: "a list", tuple: "a list", str: "text", int: "a number", float: "a number"}
        what = kind.get(
            type(payload),
            "a single tensor" if isinstance(payload, torch.Tensor) else "something else",
        )
        raise ModelFileError(path, f"is not a napari-deparray-ctc model file (it holds {what})")
    if payload.get("format") != FORMAT_NAME:
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise ModelFileError(
                path,
                "not a napari-deparray-ctc model: it is a bare state dict without metadata "
                "(to start from such weights, pass the file with --pretrained when training)",
            )
        raise ModelFileError(path, "is not a napari-deparray-ctc model file (no format marker)")
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(path, "the file's format version is missing or not a whole number")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            path,
            f"written by a newer napari-deparray-ctc (format version {version}; this version "
            f"reads up to {FORMAT_VERSION}); please upgrade",
        )
    for key in ("metadata", "state_dict"):
        if key not in payload:
            what = "weights (state dict)" if key == "state_dict" else "metadata"
            raise ModelFileError(path, f"the file has no {what}")
    meta, state = payload["metadata"], payload["state_dict"]
    if not isinstance(meta, Mapping):
        raise ModelFileError(path, "the file's metadata is not readable")
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelFileError(path, "the file's weights are not a set of tensors")
    meta = dict(meta)
    for key in ("arch", "threshold", "image_size"):
        if key not in meta:
            raise ModelFileError(path, f"the metadata does not say the {key.replace('_', ' ')}")
    if meta["arch"] not in ARCHITECTURES:
        raise ModelFileError(
            path,
            f"the architecture {meta['arch']} is not known (supported: {', '.join(ARCHITECTURES)})",
        )
    threshold = meta["threshold"]
    if not _is_number(threshold) or not 0.0 <= float(threshold) <= 1.0:
        raise ModelFileError(path, f"the stored threshold {threshold} is not between 0 and 1")
    size = meta["image_size"]
    if (
        isinstance(size, bool)
        or not isinstance(size, int)
        or not (MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE)
    ):
        raise ModelFileError(
            path,
            f"the image size {size} is not a whole number from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}",
        )
    if meta.get("input_channel", "BF") != "BF":
        raise ModelFileError(
            path, f"the model reads the {meta.get('input_channel')} channel, not bright-field"
        )
    members = meta.get("ensemble", 1)
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= 64:
        raise ModelFileError(path, "the number of networks in the file is not valid")
    try:
        meta["normalisation"] = check_normalisation(meta.get("normalisation"))
    except ValueError as exc:
        raise ModelFileError(path, str(exc)) from None
    meta["calibration"] = _check_calibration(path, meta.get("calibration"))
    if "site_profile" in meta:
        meta["site_profile"] = check_site_profile(path, meta["site_profile"])
    return {"metadata": meta, "state_dict": dict(state), "format_version": version}
