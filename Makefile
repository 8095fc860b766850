# localxai: `make serve` and `make test` work on a fresh machine with Python 3.11, a compiler and cmake.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles llama.cpp (a few minutes on 2 cores); pip caches the wheel afterwards.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: serve test lint bench llama-server install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[test]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: install
	$(BIN)/localxai serve $(ARGS)

# llama.cpp's llama-server, built once from the llama.cpp source llama-cpp-python vendors: the tests use
# it as a real upstream engine, the benchmarks as the anchor.
llama-server: install
	$(BIN)/python bench/anchors.py

test: install-test llama-server
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest $(PYTEST_ARGS)

# Benchmarks (not tests): localxai vs llama-server built from the same llama.cpp source.
bench: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) build src/*.egg-info
