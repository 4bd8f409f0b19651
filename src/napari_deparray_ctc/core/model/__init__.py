"""The model stage: the network, its file on disk, the file policy, the model card and portable export.

Modules:

- ``loaded``: the trained model: LoadedModel, load_model, save_model
- ``network``: the one-channel ResNet, pretrained weights, device choice
- ``file_format``: the model file's layout, safe reading, payload checks
- ``file_policy``: where a newly trained model goes; never replace a better model
- ``card``: what a model file says about itself, as lines
- ``portable``: ONNX export
- ``pretrained/``: the shipped synthetic-pretrained weights

The names below are imported on first use (``core.faces``), so importing one torch-free
module of this package never imports torch.
"""

from __future__ import annotations

from napari_deparray_ctc.core.faces import lazy_face

__getattr__, __all__ = lazy_face(
    __name__,
    {
        "LoadedModel": "loaded",
        "load_model": "loaded",
        "save_model": "loaded",
        "build_network": "network",
        "select_device": "network",
        "model_card_lines": "card",
        "decide_model_destination": "file_policy",
    },
)
