"""The short faces of core's stage packages: names imported on first use (PEP 562).

A stage package's ``__init__`` lists the names its callers use and the module each lives in;
importing the package (or one torch-free module of it) then imports nothing heavy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_face"]


def lazy_face(package: str, listing: str) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for a package whose names live in its modules.

    Parameters
    ----------
    package
        The package's ``__name__``.
    listing
        One line per module of the package: ``module: name name …``, the names it defines
        that the package's face offers. Blank lines are ignored.

    Examples
    --------
    >>> getattr_, names = lazy_face("json", "decoder: JSONDecoder JSONDecodeError")
    >>> names
    ['JSONDecodeError', 'JSONDecoder']
    """
    table = {}
    for line in listing.strip().splitlines():
        module, _, names = line.partition(":")
        table.update(dict.fromkeys(names.split(), module.strip()))

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(f"{package}.{table[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(table)
