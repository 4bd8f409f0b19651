"""The short faces of core's stage packages: names imported on first use (PEP 562).

A stage package's ``__init__`` lists the names its callers use and the module each lives in;
importing the package (or one torch-free module of it) then imports nothing heavy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_face"]


def lazy_face(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for a package whose ``names`` live in its modules.

    Parameters
    ----------
    package
        The package's ``__name__``.
    names
        ``{name: module}``: each name and the module of the package that defines it.
    """
    table = dict(names)

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(f"{package}.{table[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(table)
