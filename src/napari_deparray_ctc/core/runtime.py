"""Loading torch without freezing a user interface, and torch's thread count while working.

``import torch`` maps about a gigabyte of shared libraries. CPython's import machinery calls
``dlopen`` while holding the interpreter lock (GIL), so whichever thread imports torch, every
other Python thread (napari's UI thread included) stops for the whole load: 0.7 s measured on
the development machine. A call through :mod:`ctypes` to libc's ``dlopen`` releases the GIL
for the duration of the call, so :func:`preload_torch_libraries` maps torch's libraries that
way first, from a background thread; the later ``import torch`` then finds them loaded and
only runs Python-level initialisation (``benchmarks/bench_ui_stalls.py`` measures the
largest event-loop stall with and without).

When to load it matters as much as how. Measured in a real napari window under Xvfb
(Mesa's software renderer, 2 CPUs, issue 19): on its own, a background import of torch and
torchvision stalls the event loop by at most 40-60 ms (the longest single C calls holding the
GIL, e.g. ``torch._C``'s initialisation); but mapping torch's libraries while the window
redraws its canvas around a newly docked widget froze the window for 0.2-0.9 s, so nothing
loads torch when a dock opens: the first worker that needs it (:func:`load_torch_in_this_thread`:
the model file's check, a classification, a training) does. A shorter switch interval
(``sys.setswitchinterval``) did not shorten those stalls.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator

__all__ = [
    "PRELOAD_ENV",
    "collections_paused",
    "load_torch_in_this_thread",
    "preload_torch_libraries",
    "torch_threads",
]

#: set to ``0`` to skip the preload (to measure what it saves)
PRELOAD_ENV = "DEPARRAY_CTC_PRELOAD"
_RTLD_NOW = 0x2
_RTLD_GLOBAL = 0x100
#: torch's own libraries, in dependency order (missing ones are skipped: CPU builds, macOS)
_TORCH_LIBRARIES = (
    "libtorch_global_deps.so",
    "libc10.so",
    "libtorch_cpu.so",
    "libc10_cuda.so",
    "libtorch_cuda.so",
    "libtorch.so",
    "libtorch_python.so",
)
_PRELOAD_LOCK = threading.Lock()
_PRELOADED = False


def _package_dir(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return os.path.dirname(spec.origin)


def preload_torch_libraries() -> bool:
    """Map torch's (and torchvision's) shared libraries with the GIL released.

    Linux with glibc only; elsewhere, or when torch is already imported, this does nothing.
    Never raises: any failure leaves the normal ``import torch`` to do the work.

    Returns
    -------
    bool
        ``True`` when libraries were mapped by this call.
    """
    global _PRELOADED
    if not sys.platform.startswith("linux") or "torch" in sys.modules:
        return False
    if os.environ.get(PRELOAD_ENV) == "0":  # benchmarks/bench_ui_stalls.py compares both
        return False
    with _PRELOAD_LOCK:
        if _PRELOADED:
            return False
        _PRELOADED = True
        torch_dir = _package_dir("torch")
        if torch_dir is None:
            return False
        try:
            libc = ctypes.CDLL(None)
            dlopen = libc.dlopen
        except (OSError, AttributeError):
            return False
        # a ctypes foreign call releases the GIL while dlopen maps and relocates the library
        dlopen.restype = ctypes.c_void_p
        dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
        paths = [os.path.join(torch_dir, "lib", name) for name in _TORCH_LIBRARIES]
        vision_dir = _package_dir("torchvision")
        if vision_dir is not None:
            paths.append(os.path.join(vision_dir, "_C.so"))
        loaded = False
        for path in paths:
            if os.path.exists(path):
                loaded |= bool(dlopen(os.fsencode(path), _RTLD_NOW | _RTLD_GLOBAL))
        return loaded


def load_torch_in_this_thread() -> None:
    """Import torch in the calling (background) thread, the one safe way.

    Keeps Triton's LLVM away from Mesa's (``core.gl_guard``), maps torch's shared libraries
    with the GIL released (:func:`preload_torch_libraries`), then imports torch. Call it first
    in every worker that needs torch, so that no UI thread ever imports it.
    """
    from napari_deparray_ctc.core.gl_guard import avoid_gl_llvm_clash

    avoid_gl_llvm_clash()
    preload_torch_libraries()
    if "torch" not in sys.modules:
        with collections_paused():
            import torch  # noqa: F401


_GC_LOCK = threading.Lock()
_GC_PAUSES = 0  # blocks open now (threads may nest them)
_GC_WAS_ENABLED = True


@contextlib.contextmanager
def collections_paused() -> Iterator[None]:
    """No garbage collection inside the block; what it created is then kept as old objects.

    Importing torch (and torchvision) creates about a million Python objects. Each cyclic
    garbage collection during the import, and the first one after it, walks all of them while
    holding the interpreter lock: 80-200 ms each on the development machine, during which
    napari's window is frozen (``benchmarks/bench_ui_stalls.py``). Inside this block the
    collector is off; at its end the new objects are moved to the oldest generation without
    being walked (``gc.freeze()`` then ``gc.unfreeze()``), so the next full collection comes
    no sooner than it would have without the import. Nothing is kept alive: garbage made
    during the block is collected by that later full collection.
    """
    global _GC_PAUSES, _GC_WAS_ENABLED
    with _GC_LOCK:
        if _GC_PAUSES == 0:
            _GC_WAS_ENABLED = gc.isenabled()
            gc.disable()
        _GC_PAUSES += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_PAUSES -= 1
            if _GC_PAUSES == 0:
                gc.freeze()  # every tracked object to the permanent generation, not walked
                gc.unfreeze()  # ...and back, into the oldest generation
                if _GC_WAS_ENABLED:
                    gc.enable()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Limit torch's intra-op threads inside the block (``None``: leave them), then restore."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
