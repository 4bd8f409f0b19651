"""``deparray-ctc check``: whether the plugin opens DATA, and why not, in words (no pixels read).

napari does not tell a reader that the user chose it, so when a file is not a cell export the
plugin declines it silently and napari only says that the plugin refused it; this command gives
the reason (``core.io.sniff.explain_claim``) and what discovery would skip.
"""

from __future__ import annotations

import argparse

from napari_deparray_ctc.cli import options
from napari_deparray_ctc.cli.output import warn

HELP = "say whether the plugin opens DATA as cells, and why not"
DESCRIPTION = """
For each path of DATA: whether napari's DEPArray reader opens it, and if not, the reason in
words (napari itself only says that the plugin refused the file); for what it opens, the number
of cells and the files it would skip, with the reason for each. Reads headers only, never
pixels. Exit status 0 when every path opens, 1 otherwise.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``deparray-ctc check``."""
    options.add_data_argument(p, "files or folders to check")
    options.add_channel_map_option(p)


def run(args: argparse.Namespace) -> int:
    """Print one verdict per path; 1 when any path is not opened."""
    from napari_deparray_ctc.core.io import discover_cells
    from napari_deparray_ctc.core.io.sniff import explain_claim

    status = 0
    for path in args.data:
        claimed, reason = explain_claim(path)
        if not claimed:
            print(f"{path}: not opened by the plugin: {reason or 'no cell images found'}")
            status = 1
            continue
        sources, skipped = discover_cells(path, channel_map=args.channel_map)
        print(f"{path}: opens as a DEPArray export: {len(sources)} cells")
        for skipped_path, why in skipped:
            warn(f"{skipped_path}: skipped: {why}")
    return status
