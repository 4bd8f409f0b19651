"""``deparray-ctc info``: the model card stored in a model file (``core.model_card``)."""

from __future__ import annotations

import argparse
import json

HELP = "show the model card of a model file"
DESCRIPTION = """
Print what a model file says about itself: architecture and input size, training cells per class
and sample, validation figures and the cells they rest on, threshold and calibration,
augmentation and DAPI strategy, versions and date, and the trainer's note. Nothing in the file
is executed.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``deparray-ctc info``."""
    p.add_argument("model", metavar="MODEL", help="model file (.pt)")
    p.add_argument("--json", action="store_true", help="print the whole metadata as JSON")


def run(args: argparse.Namespace) -> int:
    """Print the card."""
    from napari_deparray_ctc.cli.data import load_cli_model
    from napari_deparray_ctc.core.model.card import model_card_lines

    meta = load_cli_model(args.model, "cpu").metadata
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    print(f"model card of {args.model}:")
    for line in model_card_lines(meta):
        print(f"  {line}")
    return 0
