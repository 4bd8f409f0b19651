"""The ``deparray-ctc`` argument parser, built from the command modules (cheap to build)."""

from __future__ import annotations

import argparse
import importlib
import sys

from napari_deparray_ctc.cli.commands import COMMANDS
from napari_deparray_ctc.cli.output import PROG

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """Usage errors as ``deparray-ctc: error: ...`` (one line, status 2), like every error."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser; importing the command modules imports nothing heavy (no torch)."""
    from napari_deparray_ctc import __version__

    parser = _Parser(
        prog=PROG,
        description=(
            "Classify DEPArray bright-field single-cell images as circulating tumour cells (CTC) "
            "or leukocytes (WBC). DATA is any export layout the reader accepts (files or "
            "folders); labels come from class folders (CTC/, WBC/) or a labels.csv."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for name in COMMANDS:
        command = importlib.import_module(f"napari_deparray_ctc.cli.commands.{name}")
        p = sub.add_parser(
            name,
            help=command.HELP,
            description=command.DESCRIPTION,
            add_help=getattr(command, "ADD_HELP", True),
        )
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser
