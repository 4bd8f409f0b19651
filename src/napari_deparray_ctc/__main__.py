"""``python -m napari_deparray_ctc``: the ``deparray-ctc`` command line (used by torchrun)."""

import sys

from napari_deparray_ctc.cli import main

sys.exit(main())
