"""The training stage: configuration, the training set, splits, augmentation, the fitting loop, cross-fitting, calibration and distributed training.

Its modules: ``outcome`` (TrainProgress and TrainResult); ``train`` (TrainConfig (defaults and
UI ranges), train, cross_validate); ``training_set`` (the one assembler of a TrainingSet from
cells; loading; checks); ``splits`` (stratified and group splits, k folds); ``samples``
(prepared tensors and the DAPI strategies); ``augment`` (the three augmentation families
(torchvision.transforms.v2)); ``fit`` (one network's epoch loop, model selection, early
stopping); ``crossfit`` (one network per fold, out-of-fold threshold and calibration);
``calibration`` (Platt calibration and the decision threshold); ``distributed``
(DistributedDataParallel under torchrun). Its names are imported on first use (:mod:`..faces`),
so a torch-free module of it never imports torch.
"""

from __future__ import annotations

from napari_deparray_ctc.core.faces import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    """
    train: TrainConfig cross_validate
    outcome: TrainProgress TrainResult
    training_set: TrainingSet training_set_from_cells load_training_set check_training_set MIN_PER_CLASS MIN_TOTAL
    splits: kfold_splits split_train_val
    samples: PreparedData SampleBank prepare_tensors BLEND_ALPHA_RANGE
    """,
)
