"""Packaging: the one top-level manifest ships inside the package, README and CI agree.

* ``napari.yaml`` lives at the repository top level only; the package sees it through the
  symlink ``src/napari_deparray_ctc/napari.yaml`` (editable installs) and wheels get a copy.
* ``.ci/run`` runs exactly the test command that README.md gives.
* ``pyproject.toml`` / ``tox.ini`` keep the rules of the project (lower bounds only, no GUI
  toolkit in the runtime dependencies, ``skip_missing_interpreters``...).
"""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.resources
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "napari.yaml"
DIST = "napari-deparray-ctc"
PACKAGE = "napari_deparray_ctc"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# the manifest


def test_manifest_is_valid_and_its_commands_import():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == DIST
    assert manifest.display_name == "DEPArray CTC"
    manifest.validate_imports()  # every python_name resolves to an importable object
    reader = manifest.contributions.readers[0]
    assert reader.accepts_directories
    assert {"*.tif", "*.tiff"} <= set(reader.filename_patterns)
    samples = {s.key: s.display_name for s in manifest.contributions.sample_data}
    assert samples == {"synthetic_deparray": "Synthetic DEPArray sample"}


def test_only_one_manifest_file_in_the_repository():
    in_package = REPO / "src" / PACKAGE / "napari.yaml"
    assert in_package.is_symlink(), "the package's napari.yaml must link to the top-level one"
    assert os.readlink(in_package) == os.path.join("..", "..", "napari.yaml")
    real = [
        p
        for p in REPO.rglob("napari.yaml")
        if not p.is_symlink() and not {".venv", ".tox", "build", "dist"} & set(p.parts)
    ]
    assert real == [MANIFEST]


def test_installed_package_ships_the_manifest():
    """What napari sees in this environment (editable or wheel install)."""
    from npe2 import PluginManifest

    entry_points = importlib.metadata.entry_points(group="napari.manifest")
    ours = [ep for ep in entry_points if ep.name == DIST]
    assert len(ours) == 1
    assert ours[0].value == f"{PACKAGE}:napari.yaml"
    shipped = importlib.resources.files(PACKAGE) / "napari.yaml"
    assert shipped.read_text(encoding="utf-8") == MANIFEST.read_text(encoding="utf-8")
    manifest = PluginManifest.from_distribution(DIST)
    assert manifest.name == DIST


def test_npe2_validate_passes():
    npe2_cli = Path(sys.executable).with_name("npe2")
    if not npe2_cli.exists():
        pytest.skip(f"npe2 command not found next to {sys.executable}")
    result = subprocess.run(
        [str(npe2_cli), "validate", DIST], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout.lower()


def test_wheel_ships_the_manifest_as_a_real_file(tmp_path):
    """Build the wheel in-process (hatchling, no network) and look inside."""
    pytest.importorskip("hatchling")
    from hatchling.builders.wheel import WheelBuilder
    from npe2 import PluginManifest

    source = tmp_path / "src-tree"  # build from a copy: the build must not touch the repo
    shutil.copytree(
        REPO,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".tox", "__pycache__", "*.egg-info", "out", "dist", "build", "*.pt"
        ),
    )
    (wheel,) = WheelBuilder(str(source)).build(directory=str(tmp_path), versions=["standard"])
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = archive.getinfo(f"{PACKAGE}/napari.yaml")
        assert not stat.S_ISLNK(info.external_attr >> 16), "napari.yaml is a symlink in the wheel"
        shipped = archive.read(info).decode("utf-8")
        dist_info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = archive.read(dist_info).decode("utf-8")
    assert shipped == MANIFEST.read_text(encoding="utf-8")
    assert f"{DIST} = {PACKAGE}:napari.yaml" in entry_points
    assert "deparray-ctc = napari_deparray_ctc.cli:main" in entry_points
    extracted = tmp_path / "napari.yaml"
    extracted.write_text(shipped, encoding="utf-8")
    assert PluginManifest.from_file(extracted).name == DIST
    for module in ("__init__.py", "napari/reader.py", "napari/sample_data.py", "napari/layer_data.py", "core/io/__init__.py"):
        assert f"{PACKAGE}/{module}" in names


# --------------------------------------------------------------------------------------------
# README and CI


def _quick_start_commands(readme: str) -> list[str]:
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    commands = [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    return commands


def test_readme_quick_start_has_exactly_two_commands():
    commands = _quick_start_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(commands) == 2, commands
    assert commands[0].startswith("deparray-ctc ")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    after_marker = readme.split("<!-- test-command -->", 1)[1]
    block = re.search(r"```bash\n(.*?)```", after_marker, flags=re.S)
    assert block is not None
    readme_command = block.group(1).strip()
    assert readme_command == _quick_start_commands(readme)[1]

    result = subprocess.run(
        ["bash", str(REPO / ".ci" / "run")],
        env={**os.environ, "CI_PRINT_TEST_COMMAND": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == readme_command


def test_ci_script_is_strict_and_executable():
    script = REPO / ".ci" / "run"
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert "uv " not in text and "uv pip" not in text
    assert "python3 -m venv .venv" in text
    assert 'pip install -q -e ".[testing]"' in text
    assert os.access(script, os.X_OK)
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------
# pyproject and tox


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def test_runtime_dependencies_have_lower_bounds_only():
    project = _pyproject()["project"]
    deps = project["dependencies"]
    names = {_requirement_name(d) for d in deps}
    for needed in ("numpy", "tifffile", "scikit-image", "magicgui", "qtpy", "npe2", "torch"):
        assert needed in names
    assert "torchvision" in names
    for dep in deps:
        assert ">=" in dep, f"{dep}: give a lower bound"
        assert not re.search(r"<|==|~=|!=", dep), f"{dep}: lower bounds only"
    gui = {"napari", "pyqt5", "pyqt6", "pyside2", "pyside6"}
    assert not names & gui, "napari / Qt bindings belong in the extras"
    extras = project["optional-dependencies"]
    assert any(_requirement_name(d) == "napari" for d in extras["testing"])
    assert "Framework :: napari" in project["classifiers"]
    assert project["scripts"]["deparray-ctc"] == "napari_deparray_ctc.cli:main"
    assert project["entry-points"]["napari.manifest"][DIST] == f"{PACKAGE}:napari.yaml"
    assert "ruff" in _pyproject()["tool"]


def test_tox_runs_pytest_headless_with_the_test_extras():
    config = configparser.ConfigParser()
    config.read(REPO / "tox.ini", encoding="utf-8")
    assert config["tox"]["skip_missing_interpreters"].strip() == "true"
    assert "py311" in config["tox"]["envlist"]
    testenv = config["testenv"]
    assert testenv["extras"].strip() == "testing"
    assert "QT_QPA_PLATFORM" in testenv["setenv"]
    assert "pytest" in testenv["commands"]
    assert "tox-uv" not in config["tox"].get("requires", "")
    assert "uv" not in testenv.get("runner", "")
