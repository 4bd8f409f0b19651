"""``deparray-ctc``: the headless command line (see ``deparray-ctc --help``).

``parser.py`` builds the parser from ``commands/`` (one module per command), ``data.py`` reads
DATA and model files through core, ``output.py`` prints; ``main.py`` runs one command.
"""

from napari_deparray_ctc.cli.main import main

__all__ = ["main"]
