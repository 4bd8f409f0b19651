"""napari-deparray-ctc: find circulating tumour cells in DEPArray bright-field images.

Importing the package is cheap: it imports neither torch nor napari.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
