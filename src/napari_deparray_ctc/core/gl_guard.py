"""Keep torch from loading Triton next to a software-OpenGL LLVM (a segfault otherwise).

CUDA builds of torch on Linux ship Triton, which bundles its own LLVM. ``torchvision``
imports ``torch._dynamo``, which imports Triton when it is installed. When napari's canvas
runs on Mesa's software renderer (llvmpipe: Xvfb, remote desktops, VMs, machines without a
GPU driver), Mesa's ``libLLVM`` is already loaded, and loading Triton afterwards crashes the
whole process with a segmentation fault. This plugin never uses ``torch.compile``, so in
that one situation Triton is marked unavailable before torchvision is imported; torch then
behaves as on a machine without Triton. Nothing changes anywhere else.

Every core module calls :func:`avoid_gl_llvm_clash` right before importing torchvision, so
scripts, the CLI, the widgets and the napari console are all covered.
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["avoid_gl_llvm_clash", "mapped_llvm_library"]


def mapped_llvm_library() -> str | None:
    """Path of an ``libLLVM`` shared library mapped into this process, or ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip().rsplit(" ", 1)[-1]
                if "/libLLVM" in path:
                    return path
    except OSError:
        return None
    return None


def avoid_gl_llvm_clash() -> bool:
    """Mark Triton unavailable when a GL driver's LLVM is already in the process.

    Call before the first torchvision import. Cheap (reads ``/proc/self/maps`` once), never
    raises.

    Returns
    -------
    bool
        ``True`` when Triton was blocked.
    """
    if "triton" in sys.modules or "torch._dynamo" in sys.modules:
        return False  # already imported (safely, or too late to help)
    try:
        if importlib.util.find_spec("triton") is None:
            return False
    except (ImportError, ValueError):
        return False
    if mapped_llvm_library() is None:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # `import triton` -> ImportError
    return True
