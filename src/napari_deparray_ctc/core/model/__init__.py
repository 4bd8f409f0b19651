"""The model stage: the network, its file on disk, the file policy, the model card and portable export.

Its modules: ``loaded`` (the trained model: LoadedModel, load_model, save_model); ``network``
(the one-channel ResNet, pretrained weights, device choice); ``file_format`` (the model file's
layout, safe reading, payload checks); ``file_policy`` (where a newly trained model goes; never
replace a better model); ``card`` (what a model file says about itself, as lines); ``portable``
(ONNX export); ``pretrained/`` (the shipped synthetic-pretrained weights). Its names are
imported on first use (:mod:`..faces`), so a torch-free module of it never imports torch.
"""

from __future__ import annotations

from napari_deparray_ctc.core.faces import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    """
    loaded: LoadedModel load_model save_model
    network: build_network select_device
    card: model_card_lines
    file_policy: decide_model_destination
    """,
)
