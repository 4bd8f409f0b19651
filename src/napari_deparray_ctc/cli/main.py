"""The ``deparray-ctc`` entry point: parse, run one command, turn user errors into one line."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from napari_deparray_ctc.cli.output import PROG, warn
from napari_deparray_ctc.cli.parser import build_parser
from napari_deparray_ctc.core.errors import DeparrayError, describe_os_error, printable_path

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "main"]

EXIT_USAGE = 2  # argparse's status for bad usage; also used for user errors
EXIT_INTERRUPTED = 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Core warnings as one ``deparray-ctc: warning: ...`` line (no file/line noise)."""
    warn(str(message))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``deparray-ctc``.

    Parameters
    ----------
    argv
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 for bad usage or a user error (one line on stderr,
        ``deparray-ctc: error: <file>: <reason>``), 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DeparrayError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a full disk, a share that went away...: in words, not errno
        where = f"{printable_path(exc.filename)}: " if exc.filename else ""
        print(
            f"{PROG}: error: {where}a file could not be read or written: "
            f"{describe_os_error(exc)} (nothing was half-written)",
            file=sys.stderr,
        )
        return EXIT_USAGE
