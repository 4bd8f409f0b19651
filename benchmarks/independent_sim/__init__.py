"""An independent simulator of a second DEPArray-like instrument, for evaluation only.

It shares no code and no parameter ranges with ``napari_deparray_ctc.core.synth`` or
``benchmarks/pretrain.py``: see README.md in this folder. Never train defaults,
augmentation ranges or pretraining on its output.
"""

from .simulate import INSTRUMENTS, Instrument, simulate_cells, write_export

__all__ = ["INSTRUMENTS", "Instrument", "simulate_cells", "write_export"]
