"""``deparray-ctc``: the headless command line (see ``deparray-ctc --help``)."""

from napari_deparray_ctc.cli.app import main

__all__ = ["main"]
