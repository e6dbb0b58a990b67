# Set-up is idempotent: stamps under .venv record what is installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# The CPU wheel of torch; installed first, then kept by constraints.txt so that no later
# install swaps in a CUDA build (gigabytes).
TORCH := torch==2.13.0

.PHONY: demo test install install-dev lint typecheck bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Visage needs Python 3.11 or newer (found " + sys.version.split()[0] + "); set PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	@touch $@

$(VENV)/.installed: pyproject.toml constraints.txt $(VENV)/.torch
	$(PIP) install --quiet -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

# Headless Chromium for the browser tests, from Debian (Playwright's own download
# needs the internet). Only installed when missing; CI runs as root.
$(VENV)/.chromium: | $(BIN)/python
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }
	@touch $@

# coturn's turnserver for the TURN relay test (tests/test_turn_relay.py), from Debian.
# Only the binary is used: the test starts its own on loopback. Installed when missing;
# the system service the package enables (an open relay on every interface with the
# stock config) is stopped and disabled at once.
$(VENV)/.coturn: | $(BIN)/python
	@command -v turnserver >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq coturn && \
	  { $$SUDO systemctl disable --now coturn >/dev/null 2>&1 || true; }; }
	@touch $@

# Model files that ship only inside wheels we cannot install (MediaPipe's face models in
# mediapipe, Moonshine tiny-en in moonshine-voice 0.0.4): taken out into ~/.cache/visage/models
# and checked against pinned sha256 (a no-op once they are there).
install: $(VENV)/.installed
	$(BIN)/visage models fetch

install-dev: install $(VENV)/.installed-dev $(VENV)/.chromium $(VENV)/.coturn

# make demo AVATAR=astronaut: the sample portrait (made by make install) instead of the
# stylised face.
demo: install
	$(BIN)/visage serve $(if $(AVATAR),--avatar $(AVATAR))

test: install-dev
	$(BIN)/python -m pytest -q -rs

lint: install-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

bench: install
	$(BIN)/visage bench render
	$(BIN)/visage bench render --width 256 --height 256

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
