"""Training data, as callers have always imported it: a face over three modules.

``core.training_set`` (the set, the one assembler from cells, loading, checks),
``core.splits`` (stratified / group splits and k folds) and ``core.samples`` (prepared
tensors and the DAPI strategies).
"""

from napari_deparray_ctc.core.constants import DAPI_STRATEGIES
from napari_deparray_ctc.core.errors import TrainingDataError
from napari_deparray_ctc.core.samples import (
    BLEND_ALPHA_RANGE,
    PreparedData,
    SampleBank,
    prepare_tensors,
)
from napari_deparray_ctc.core.splits import kfold_splits, split_train_val
from napari_deparray_ctc.core.training_set import (
    MIN_PER_CLASS,
    MIN_TOTAL,
    TrainingSet,
    check_training_set,
    load_training_set,
    training_set_from_cells,
)

__all__ = [
    "BLEND_ALPHA_RANGE",
    "DAPI_STRATEGIES",
    "MIN_PER_CLASS",
    "MIN_TOTAL",
    "PreparedData",
    "SampleBank",
    "TrainingDataError",
    "TrainingSet",
    "check_training_set",
    "kfold_splits",
    "load_training_set",
    "prepare_tensors",
    "split_train_val",
    "training_set_from_cells",
]
