"""Names and limits shared by the core, the command line and the widgets: one copy, torch-free.

Importing this module costs nothing (no numpy, no torch), so the CLI parser and the widgets
can build their choices from it without loading the classifier.
"""

from __future__ import annotations

import os

__all__ = [
    "ARCHITECTURES",
    "AUGMENT_FAMILIES",
    "CLASS_NAMES",
    "DAPI_STRATEGIES",
    "DEFAULT_IMAGE_SIZE",
    "LAYOUTS",
    "MAX_IMAGE_SIZE",
    "MIN_IMAGE_SIZE",
    "MODEL_FILE_FILTER",
    "MODEL_FILE_SUFFIXES",
    "PREDICTION_CSV_COLUMNS",
    "TIFF_SUFFIXES",
    "background_threads",
    "call_label",
    "is_called_ctc",
    "is_class_label",
]

#: Supported torchvision architectures.
ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
#: Class order: output index / logit sign. P(CTC) = sigmoid(logit); index 0 = WBC, 1 = CTC.
CLASS_NAMES: tuple[str, str] = ("WBC", "CTC")
#: The three augmentation families (torchvision.transforms.v2), see ``core.augment``.
AUGMENT_FAMILIES: tuple[str, ...] = ("geometric", "photometric", "noise")
#: How DAPI images enter training (inference is always BF only), see ``core.samples``.
DAPI_STRATEGIES: tuple[str, ...] = ("none", "substitute", "blend", "aux_nucleus")
#: Layouts of the synthetic exports (``deparray-ctc synth --layout``).
LAYOUTS: tuple[str, ...] = ("multipage", "perchannel", "ome", "classdirs", "stack")

#: Default network input size in pixels (square).
DEFAULT_IMAGE_SIZE = 64
#: Smallest input size a ResNet can take (five stride-2 stages down to 1 px).
MIN_IMAGE_SIZE = 16
#: Largest input size accepted from a model file (sanity bound).
MAX_IMAGE_SIZE = 1024

#: File name endings of model files; the first is the one written by default.
MODEL_FILE_SUFFIXES: tuple[str, ...] = (".pt", ".pth")
#: Qt file-dialog filter for model files.
MODEL_FILE_FILTER = "Model files (*.pt *.pth);;All files (*)"

#: File name endings taken as TIFF (case-insensitive; ``.ome.tif`` included).
TIFF_SUFFIXES: tuple[str, ...] = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".btf", ".tf8", ".tf2")

#: Columns of every per-cell CSV the plugin writes (CLI ``classify``, the widget's Export CSV,
#: File > Save Selected Layer(s)); prediction columns are empty for cells not classified.
PREDICTION_CSV_COLUMNS: tuple[str, ...] = (
    "cell_id",
    "path",
    "p_ctc",
    "label",
    "threshold",
    "calibration",
    "annotation",
)


def background_threads() -> int:
    """Torch intra-op threads for work that runs next to a user interface.

    All cores but one, so that napari (or the shell) keeps a core: on 2 busy cores one torch
    thread was several times faster than two (``benchmarks/bench_train_ui.py``).
    """
    return max(1, (os.cpu_count() or 2) - 1)


def is_class_label(label: object) -> bool:
    """``True`` for the two class names (``"CTC"``, ``"WBC"``); unknown or empty is ``False``."""
    return label in CLASS_NAMES


def is_called_ctc(p_ctc, threshold):
    """The call rule, the one place it is written: a cell is CTC when ``p_ctc >= threshold``.

    Works on a float or on a numpy array of probabilities (then returns a boolean array).
    """
    return p_ctc >= threshold


def call_label(p_ctc: float, threshold: float) -> str:
    """``"CTC"`` or ``"WBC"`` for one cell, by :func:`is_called_ctc`."""
    return CLASS_NAMES[1] if is_called_ctc(p_ctc, threshold) else CLASS_NAMES[0]
