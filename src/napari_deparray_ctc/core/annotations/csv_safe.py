"""The one CSV writer (and reader) of the plugin, safe to open in a spreadsheet.

A cell id comes from a file name, and a file name can be ``=HYPERLINK("http://x","click")``:
written as it is, a spreadsheet would run it as a formula (CSV injection). Every CSV the
plugin writes (the cell table, ``labels.csv`` and the annotation sidecars, the per-sample
counts, ``suggest --out``) goes through :func:`write_csv`, which escapes such text cells the
OWASP way: a single quote ``'`` in front of a text value beginning with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return. Spreadsheets then show the text, not a formula.

The escape is undone on reading (:func:`read_csv`, :func:`unescape_cell`; ``read_labels_csv``
and ``read_cell_table`` use it), so a value written and read back is the original text:

* numbers (``int``/``float``) and text that is a plain number (``-0.5``, ``+3``, ``1e-3``)
  are never escaped: a spreadsheet reads them as numbers, never as formulas;
* a text value that already begins with quotes followed by one of those characters
  (``'=x``) gets one more quote, so reading removes exactly the quote the writer added.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from napari_deparray_ctc.core.atomic import atomic_write

__all__ = [
    "FORMULA_PREFIXES",
    "escape_cell",
    "read_csv",
    "unescape_cell",
    "write_csv",
    "write_csv_rows",
]

#: First characters that make a spreadsheet read a cell as a formula (OWASP).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# optional quotes, then a formula character: the values that are (or were) escaped
_NEEDS_QUOTE = re.compile(r"'*[=+\-@\t\r]")
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")
# a plain decimal number, as a spreadsheet reads one (not a formula)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def escape_cell(value: Any) -> Any:
    """A value as written to a CSV cell: text that a spreadsheet would run gets a ``'``.

    Parameters
    ----------
    value
        A cell value. Only text (``str``, or a path, taken as its text) is ever escaped;
        numbers, ``None`` and other objects are returned as they are (``csv`` writes them).

    Returns
    -------
    object
        ``"'" + value`` for text beginning (after any quotes) with ``=``, ``+``, ``-``,
        ``@``, tab or carriage return, unless the text is a plain number; else ``value``.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and _NEEDS_QUOTE.match(value) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def unescape_cell(text: str) -> str:
    """The original text of a CSV cell written by :func:`escape_cell` (the inverse).

    Parameters
    ----------
    text
        A cell as read from the file.

    Returns
    -------
    str
        ``text`` without the one leading quote the writer added; other text unchanged.
    """
    if _ESCAPED.match(text) and not _NUMBER.fullmatch(text[1:]):
        return text[1:]
    return text


def write_csv_rows(
    handle: IO[str],
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    lineterminator: str = "\r\n",
) -> int:
    """Write a header and rows to an open text file, every text cell escaped.

    The escaping writer behind :func:`write_csv`, for a caller that opens the file itself
    (always with ``core.atomic.atomic_write(path, "w", newline="", ...)``).

    Parameters
    ----------
    handle
        A text file opened with ``newline=""``.
    columns
        The header.
    rows
        Mappings (``column -> value``; missing columns and ``None`` are written empty) or
        sequences aligned with ``columns``.
    lineterminator
        Line ending (``csv``'s default ``"\r\n"``, or ``"\n"``).

    Returns
    -------
    int
        Number of rows written.

    Raises
    ------
    ValueError
        A mapping row holds a key that is not a column.
    """
    count = 0
    names = list(columns)
    writer = csv.writer(handle, lineterminator=lineterminator)
    writer.writerow(names)
    for row in rows:
        if isinstance(row, Mapping):
            unknown = [key for key in row if key not in names]
            if unknown:
                raise ValueError(f"row has columns {unknown} that are not in {names}")
            values = [row.get(name) for name in names]
        else:
            values = list(row)
        writer.writerow(["" if v is None else escape_cell(v) for v in values])
        count += 1
    return count


def write_csv(
    path: str | os.PathLike,
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    lineterminator: str = "\r\n",
) -> int:
    """Write a CSV file atomically, every text cell escaped (:func:`escape_cell`).

    Parameters
    ----------
    path
        Destination; its folder must exist. The old file stays whole on any failure.
    columns, rows, lineterminator
        As for :func:`write_csv_rows`, which also says what it returns and raises; when it
        raises, nothing is written.
    """
    # surrogateescape: paths with non-UTF-8 bytes are written as they are
    with atomic_write(path, "w", newline="", errors="surrogateescape") as handle:
        return write_csv_rows(handle, columns, rows, lineterminator)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV file written by :func:`write_csv`, as dicts of the original text.

    Parameters
    ----------
    path
        The file (UTF-8, a BOM allowed; non-UTF-8 bytes kept as surrogates).

    Returns
    -------
    list of dict
        ``column -> text`` per row, every cell unescaped (:func:`unescape_cell`).
    """
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        return [
            {
                key: unescape_cell(value) if isinstance(value, str) else value
                for key, value in row.items()
            }
            for row in csv.DictReader(handle)
        ]
