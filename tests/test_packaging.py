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
    for module in (
        "__init__.py",
        "napari/reader.py",
        "napari/sample_data.py",
        "napari/layer_data.py",
        "core/io/__init__.py",
    ):
        assert f"{PACKAGE}/{module}" in names


# --------------------------------------------------------------------------------------------
# README and CI


def _block_after(readme: str, marker: str) -> str:
    after_marker = readme.split(marker, 1)[1]
    block = re.match(r"\s*```bash\n(.*?)```", after_marker, flags=re.S)
    assert block is not None, f"no ```bash block right after {marker}"
    return block.group(1).strip()


def test_readme_has_the_two_commands_that_do_everything():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    demo = _block_after(readme, "<!-- demo-command -->")
    test = _block_after(readme, "<!-- test-command -->")
    assert demo.splitlines() == ["make demo"]
    assert test.splitlines() == ["make test"]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    # each creates or reuses .venv and installs what it needs
    assert "-m venv $(VENV)" in makefile and "VENV := .venv" in makefile
    assert 'pip install -q -e ".[testing]"' in makefile
    assert "deparray-ctc demo" in makefile and "-m pytest" in makefile
    assert "bash .ci/system-deps.sh" in makefile
    # README images render on the napari hub: absolute URLs, files kept in docs/
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert target.startswith("https://"), target
        assert (REPO / "docs" / target.rsplit("/docs/", 1)[1]).is_file(), target


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    readme_command = _block_after(readme, "<!-- test-command -->")
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
    assert "rm -rf .venv" in text  # a fresh environment, built by the README's command
    assert os.access(script, os.X_OK)
    for name in ("run", "system-deps.sh"):
        result = subprocess.run(
            ["bash", "-n", str(REPO / ".ci" / name)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


def _fake_machine(tmp_path: Path, missing: str) -> dict[str, str]:
    """A PATH where ldd reports ``missing`` as not found and apt-get cannot be used."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ldd").write_text(f"#!/bin/sh\necho '\t{missing} => not found'\n")
    (bin_dir / "ldconfig").write_text("#!/bin/sh\nexit 0\n")  # knows no library at all
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")  # not root, and no sudo
    for tool in ("ldd", "ldconfig", "id"):
        (bin_dir / tool).chmod(0o755)
    plugins = tmp_path / "venv/lib/python3.11/site-packages/PyQt6/Qt6/plugins/platforms"
    plugins.mkdir(parents=True)
    (plugins / "libqxcb.so").write_bytes(b"")
    system = ":".join(p for p in ("/usr/bin", "/bin") if Path(p).is_dir())
    return {"PATH": f"{bin_dir}:{system}", "HOME": str(tmp_path)}


def test_system_deps_stop_with_one_message_when_they_cannot_install(tmp_path):
    if shutil.which("bash") is None or not sys.platform.startswith("linux"):
        pytest.skip("Linux with bash only")
    env = _fake_machine(tmp_path, "libxcb-icccm.so.4")
    result = subprocess.run(
        ["bash", str(REPO / ".ci" / "system-deps.sh"), str(tmp_path / "venv")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: napari's Qt/OpenGL canvas cannot run here")
    assert "libxcb-icccm4" in result.stderr  # the package, not the library, is named
    assert "sudo apt-get install -y" in result.stderr  # and the command that installs it
    assert "libxkbcommon-x11-0" in result.stderr  # ldconfig knew none of the runtime libraries


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
    # napari's recommendation (PyQt6), and the binding the tests run with
    assert extras["napari"] == ["napari[all]>=0.5"]
    assert any(d.startswith("napari[pyqt6]") for d in extras["testing"])
    assert project["license"] == "BSD-3-Clause" and project["license-files"] == ["LICENSE"]
    urls = project["urls"]
    assert set(urls) == {"Homepage", "Documentation", "Source Code", "Bug Tracker", "User Support"}
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
