# tunesvc: every target works from a fresh clone. `make test` installs first when needed.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU build of torch (a wheel of it lies on this machine class's disk); a range above it
# would pull a multi-GB CUDA build. On a GPU machine: make install TORCH=torch
TORCH   ?= torch==2.13.0
PGCLUSTER = $(shell ls /etc/postgresql 2>/dev/null | head -n1)

.PHONY: install test lint demo bench dashboard clean services

install: $(STAMP)

$(STAMP): pyproject.toml
	@# Debian's Chromium drives the dashboard's browser test (no browser download of its own).
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq chromium; fi
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

services:
	@if [ -n "$(PGCLUSTER)" ] && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		pg_ctlcluster --skip-systemctl-redirect $(PGCLUSTER) main start; fi

test: install services
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check tunesvc objectives tests
	$(BIN)/mypy

demo: install
	$(BIN)/tunesvc study delete demo --yes >/dev/null 2>&1 || true
	$(BIN)/tunesvc study create demo --objective digits_mlp --n-trials 6 --epochs 5
	$(BIN)/tunesvc study run demo
	$(BIN)/tunesvc study best demo

bench: install services
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python tests/benchmarks/run_all.py

dashboard: install
	$(BIN)/tunesvc dashboard

clean:
	rm -rf $(VENV) storage/*.db storage/artifacts storage/datasets
