# Two commands do all the set-up, on a bare machine with Python >= 3.10:
#
#   make demo    the main job (deparray-ctc demo) on bundled synthetic data
#   make test    the whole test suite (also installs Xvfb, Mesa and Qt's xcb libraries
#                with apt-get when they are missing; see .ci/system-deps.sh)
#
# Both create (or reuse) a local .venv and install what they need into it. PYTHON picks the
# interpreter (default python3); PIP_ARGS passes extra options to pip (e.g. an index URL).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
PIP_ARGS ?=
VENV := .venv
BIN := $(VENV)/bin
# this machine's pip configuration may name local package folders that are missing: quiet that
QUIET_PIP := sed '/is ignored: it is neither a file nor a directory/d'

.PHONY: demo test venv clean-venv

demo: $(VENV)/.installed-base
	$(BIN)/deparray-ctc demo

test: $(VENV)/.installed-testing
	bash .ci/system-deps.sh $(VENV)
	$(BIN)/python -m pytest

venv: $(VENV)/.installed-testing

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is needed"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-base: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e . $(PIP_ARGS) 2>&1 | $(QUIET_PIP)
	touch $@

$(VENV)/.installed-testing: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e ".[testing]" $(PIP_ARGS) 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip list --format=freeze > $(VENV)/pip-freeze.txt
	touch $@ $(VENV)/.installed-base

clean-venv:
	rm -rf $(VENV)
