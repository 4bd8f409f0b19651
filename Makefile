# Two commands do all the set-up, on a bare machine with Python >= 3.10:
#
#   make demo    the main job (deparray-ctc demo) on bundled synthetic data
#   make test    the whole test suite (also installs Xvfb, Mesa and Qt's xcb libraries
#                with apt-get when they are missing; see .ci/system-deps.sh)
#
# Both create (or reuse) a local .venv and install what they need into it. PYTHON picks the
# interpreter (default python3); PIP_ARGS passes extra options to pip (e.g. an index URL).
PYTHON ?= python3
PIP_ARGS ?=
VENV := .venv
BIN := $(VENV)/bin

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
	$(BIN)/python -m pip install -q --upgrade pip $(PIP_ARGS)

$(VENV)/.installed-base: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e . $(PIP_ARGS)
	touch $@

$(VENV)/.installed-testing: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e ".[testing]" $(PIP_ARGS)
	touch $@ $(VENV)/.installed-base

clean-venv:
	rm -rf $(VENV)
