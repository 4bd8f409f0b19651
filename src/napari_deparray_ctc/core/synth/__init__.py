"""Synthetic DEPArray-like single-cell exports: sample data, test data and benchmark data.

No public DEPArray image set exists, so the plugin ships a generator that draws circulating
tumour cells (CTCs) and leukocytes (WBCs) in the four channels of the DEPArray CTC panel
(BF, DAPI, PE = cytokeratin, APC = CD45) and writes them in every export layout the reader
supports. numpy, scipy and tifffile only (no torch, no napari). The biology, the image
formation and their sources are described in ``docs/synthetic_data.md``.

Modules: ``optics`` (:class:`Optics`), ``domains`` (benchmark instruments and randomised
ones), ``biology`` (subtypes and their parameters), ``scene`` (the physical field),
``imaging`` (bright-field, fluorescence, camera; one cell), ``cells`` (:func:`synth_cells`)
and ``export`` (:func:`write_export`).
"""

from napari_deparray_ctc.core.constants import LAYOUTS
from napari_deparray_ctc.core.synth.biology import SUBTYPES
from napari_deparray_ctc.core.synth.cells import synth_cells
from napari_deparray_ctc.core.synth.domains import DOMAINS, Domain, domain, randomised_optics
from napari_deparray_ctc.core.synth.export import write_export
from napari_deparray_ctc.core.synth.imaging import CHANNELS, SynthCell
from napari_deparray_ctc.core.synth.optics import Optics

__all__ = [
    "CHANNELS",
    "DOMAINS",
    "LAYOUTS",
    "SUBTYPES",
    "Domain",
    "Optics",
    "SynthCell",
    "domain",
    "randomised_optics",
    "synth_cells",
    "write_export",
]
