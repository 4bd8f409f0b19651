"""Labels that name a file in full, in a narrow dock: wrapped anywhere, selectable, its folder a link."""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from qtpy.QtCore import Qt, QUrl
from qtpy.QtGui import QDesktopServices
from qtpy.QtWidgets import QLabel

__all__ = ["path_label", "set_path_label", "wrap_anywhere"]

_ZWSP = "\u200b"  # zero-width space: where a long path or name may wrap


def wrap_anywhere(text: str) -> str:
    """``text`` with invisible break points after ``/ \\ _ - .`` so a label can wrap a path."""
    out = []
    for char in str(text):
        out.append(char)
        if char in "/\\_-.":
            out.append(_ZWSP)
    return "".join(out)


def path_label(prefix: str = "", path: str | os.PathLike | None = None) -> QLabel:
    """A label naming a file in full: wrapped anywhere, selectable, its folder a link.

    Update it with :func:`set_path_label`.
    """
    label = QLabel()
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setTextInteractionFlags(
        Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.LinksAccessibleByMouse
    )
    label.linkActivated.connect(lambda url: QDesktopServices.openUrl(QUrl(url)))
    label.setProperty("_deparray_prefix", prefix)
    set_path_label(label, path)
    return label


def set_path_label(
    label: QLabel, path: str | os.PathLike | None, prefix: str | None = None
) -> None:
    """Show ``path`` in a :func:`path_label` (``None``: hide it)."""
    if prefix is not None:
        label.setProperty("_deparray_prefix", prefix)
    prefix = str(label.property("_deparray_prefix") or "")
    if not path:
        label.setText("")
        label.setToolTip("")
        label.setVisible(False)
        return
    full = os.path.abspath(os.fspath(path))
    folder = Path(full).parent
    link = QUrl.fromLocalFile(str(folder)).toString()
    label.setText(
        f"{escape(prefix)}{' ' if prefix else ''}{escape(wrap_anywhere(full))} "
        f"(<a href='{escape(link)}'>open folder</a>)"
    )
    label.setToolTip(f"{full}\n\nSelect the text to copy it; the link opens the folder.")
    label.setVisible(True)
