# make demo: venv + install + the whole pipeline on the embedded default (local Ray, local disk, tiny models).
# make test: venv + install + ruff (make lint) + the test suite (CI runs this through .ci/run).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0
export DS_ACCELERATOR ?= cpu

.PHONY: demo test lint test-all test-slow install clean bench bench-smoke

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned resolve can pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dft demo

# ruff (pyproject.toml [tool.ruff]): pyflakes, pycodestyle, import order, bugbear. `make test` runs it first.
lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -m "not slow and not gpu" --timeout=1800 --durations=25

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow and not gpu" --timeout=1800 --durations=25

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu" --timeout=1800

# make bench: every benchmark at its default size (each about 10 minutes on a 2-core machine), alternating
# bare/ours pairs, then every ratio with its goal. make bench-smoke: the same at tiny sizes (what make test runs).
BENCHMARKS := prompts generate_overhead generate train evaluate

bench: SHELL := /bin/bash
bench: $(STAMP)
	@set -eo pipefail; log=$$(mktemp); for b in $(BENCHMARKS); do echo "== benchmarks/$$b.py"; \
	  $(BIN)/python benchmarks/$$b.py $(BENCH_ARGS) | grep -v '^RESULT ' | tee -a $$log; done; \
	  echo "== every ratio (median over alternating pairs)"; grep '^RATIO ' $$log; rm -f $$log

bench-smoke:
	$(MAKE) bench BENCH_ARGS=--smoke

clean:
	rm -rf $(VENV) runs .pytest_cache
