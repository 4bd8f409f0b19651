"""What the plugin remembers across napari sessions: the last model file used.

A small JSON file in the user's config folder (``$DEPARRAY_CTC_CONFIG_DIR`` overrides),
written atomically. Nothing here imports Qt, napari or torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_DIR_ENV", "config_dir", "last_model_path", "remember_model_path"]

#: environment variable that overrides where widget settings are kept
CONFIG_DIR_ENV = "DEPARRAY_CTC_CONFIG_DIR"
_SETTINGS_FILE = "classify_widget.json"


def config_dir() -> Path:
    """Folder of the widget settings (``$DEPARRAY_CTC_CONFIG_DIR`` or the user config dir)."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override)
    try:
        from platformdirs import user_config_dir
    except ImportError:  # pragma: no cover - platformdirs ships with napari
        return Path.home() / ".config" / "napari-deparray-ctc"
    return Path(user_config_dir("napari-deparray-ctc", appauthor=False))


def _settings_path() -> Path:
    return config_dir() / _SETTINGS_FILE


def _read_settings() -> dict[str, Any]:
    try:
        value = json.loads(_settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def last_model_path() -> str:
    """The model file used last time (``""`` when none was remembered or it is unreadable)."""
    value = _read_settings().get("last_model_path")
    return value if isinstance(value, str) else ""


def remember_model_path(path: str | os.PathLike) -> bool:
    """Remember ``path`` as the last model used (atomic write of the settings file).

    Returns
    -------
    bool
        ``False`` when the settings could not be written (the widget keeps working).
    """
    from napari_deparray_ctc.core.atomic import atomic_write

    settings = _read_settings()
    settings["last_model_path"] = os.fspath(path)
    target = _settings_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, "w") as handle:
            json.dump(settings, handle, indent=2)
    except OSError:
        return False
    return True
