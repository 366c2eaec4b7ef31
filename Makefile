# layerkit's tasks. `bash setup.sh <target>` runs these on a fresh Debian 12 machine.
VENV    ?= .venv
PY      := $(VENV)/bin/python
LK      := $(VENV)/bin/layerkit
PYTEST_ARGS ?=
SCALE   ?= 3

.PHONY: help venv setup engine compose-tool browser images demo test unit engine-tests lint types check bench reports clean

help:
	@echo "targets: setup images demo test unit lint types bench reports clean"

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Engine and offline-bootstrap tools (docker.io, mmdebstrap), dockerd started; then the checks.
engine: venv
	$(LK) doctor --fix

# Debian's docker-compose 1.29 (v1), which the compose test (tests/engine/test_compose.py) runs.
compose-tool:
	@command -v docker-compose >/dev/null 2>&1 || { apt-get update -qq && \
	    apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }

# Debian's headless Chromium: the HTML report is checked in a real browser
# (tests/unit/test_report_browser.py).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

setup: engine compose-tool browser

images: setup
	$(LK) build

# The main job: images built, a 3-node cluster started (replacing an earlier demo cluster);
# it prints the URL, http://127.0.0.1:8080/ by default.
demo: images
	$(LK) down --name demo
	$(LK) up --scale $(SCALE) --name demo

lint: venv
	$(VENV)/bin/ruff check layerkit tests bench

types: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The whole suite; the engine tier is required, never skipped.
test: setup lint types
	$(PY) -m pytest --require-docker $(PYTEST_ARGS)

bench: images
	$(PY) bench/run.py --out reports/benchmarks.md

# Example reports of the project's own images (reports/analyze-<images>.{json,md,html}, with
# charts). The only way the committed examples change: `layerkit analyze` run inside this tree
# writes to build/reports/ unless told --out.
reports: images
	$(LK) analyze layerkit/base:latest layerkit/haproxy:latest layerkit/webapp:latest \
	    --out reports --format markdown > /dev/null

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
