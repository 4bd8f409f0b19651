"""The training stage: configuration, the training set, splits, augmentation, the fitting loop, cross-fitting, calibration and distributed training.

Modules:

- ``outcome``: TrainProgress and TrainResult
- ``train``: TrainConfig (defaults and UI ranges), train, cross_validate
- ``training_set``: the one assembler of a TrainingSet from cells; loading; checks
- ``splits``: stratified and group splits, k folds
- ``samples``: prepared tensors and the DAPI strategies
- ``augment``: the three augmentation families (torchvision.transforms.v2)
- ``fit``: one network's epoch loop, model selection, early stopping
- ``crossfit``: one network per fold, out-of-fold threshold and calibration
- ``calibration``: Platt calibration and the decision threshold
- ``distributed``: DistributedDataParallel under torchrun

The names below are imported on first use (``core.faces``), so importing one torch-free
module of this package never imports torch.
"""

from __future__ import annotations

from napari_deparray_ctc.core.faces import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        "TrainConfig": "train",
        "TrainProgress": "outcome",
        "TrainResult": "outcome",
        "cross_validate": "train",
        "TrainingSet": "training_set",
        "training_set_from_cells": "training_set",
        "load_training_set": "training_set",
        "check_training_set": "training_set",
        "MIN_PER_CLASS": "training_set",
        "MIN_TOTAL": "training_set",
        "kfold_splits": "splits",
        "split_train_val": "splits",
        "PreparedData": "samples",
        "SampleBank": "samples",
        "prepare_tensors": "samples",
        "BLEND_ALPHA_RANGE": "samples",
    },
)
