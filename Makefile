# kwaigym developer entry points. The venv lives in .venv at the repo root; `make setup` also
# prepares the host (packages, podman config: see kwaigym/host.py) and needs root.
PY ?= python3
VENV = .venv
PYTHON = $(VENV)/bin/python
PIP = $(PYTHON) -m pip
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup test demo train-demo bench lint clean

help:
	@echo "make setup   venv + packages, host setup (root: podman, runc...), base image"
	@echo "make test    setup, then the test suite (PYTEST_ARGS='-k sandbox' to narrow)"
	@echo "make demo    setup, then kwaigym eval: bundled tasks x mini, claude-code x oracle"
	@echo "make train-demo  setup, then SFT and RL experts per domain and OPD into one student (CPU)"
	@echo "make bench   setup, then every benchmarks/*.py (BENCH_ARGS=--quick)"
	@echo "make lint    ruff check ."
	@echo "make clean   remove .venv and caches"

# Rebuilt when pyproject.toml changes. On a machine without an NVIDIA GPU the CPU build of torch is
# installed first: the trainer extra's open range would otherwise pull a multi-GB CUDA build.
# --no-compile: byte-compiling torch and friends up front costs half a minute; imports compile lazily.
$(VENV)/.installed: pyproject.toml
	@test -x $(PYTHON) || { \
		$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
			echo "kwaigym needs Python >= 3.11; '$(PY)' is missing or older: make PY=python3.11 ..." >&2; \
			exit 1; }; \
		$(PY) -m venv $(VENV) || { rm -rf $(VENV); \
			echo "Could not create $(VENV). On Debian/Ubuntu: apt-get install python3-venv, retry." >&2; \
			exit 1; }; }
	@$(PIP) install -q --upgrade pip
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		echo "no NVIDIA GPU: installing the CPU build torch==2.13.0"; \
		$(PIP) install -q --no-compile torch==2.13.0; fi
	@echo "installing kwaigym[dev,trainer] into $(VENV)"
	@$(PIP) install -q --no-compile -e '.[dev,trainer]'
	@touch $@

HOST_FLAGS ?=
setup: $(VENV)/.installed
	$(PYTHON) -m kwaigym.host $(HOST_FLAGS)
	$(VENV)/bin/kwaigym images bootstrap

test: HOST_FLAGS = --test-tools
# Agent bundles are installed before the tests (cached: quick when done), so no test pays for a download.
test: setup
	$(VENV)/bin/kwaigym scaffolds install all
	$(PYTHON) -m pytest -n auto -q $(PYTEST_ARGS)

# The bundled dataset with kwaigym's own agent and Claude Code, the oracle policy: every task passes.
demo: setup
	rm -rf runs/demo
	$(VENV)/bin/kwaigym eval --dataset examples --scaffold mini,claude-code --policy oracle \
		--concurrency 8 --out runs/demo
	$(VENV)/bin/kwaigym report runs/demo

# The specialize-then-unify recipe on two drills domains with a tiny model trained from scratch, on
# the CPU; runs again resume (finished stages are skipped), so start afresh with rm -rf runs/train-demo.
train-demo: setup
	$(PYTHON) -m reference_trainer pipeline examples/pipeline/demo.toml

bench: setup
	@set -e; found=0; for f in benchmarks/*.py; do \
		[ -e "$$f" ] || continue; found=1; \
		echo "== $$f $(BENCH_ARGS)"; $(PYTHON) "$$f" $(BENCH_ARGS); \
	done; [ $$found = 1 ] || echo "no benchmarks/*.py to run"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
