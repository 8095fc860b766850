# localxai: `make serve` and `make test` work on a fresh machine with Python 3.11, a compiler and cmake.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles llama.cpp (a few minutes on 2 cores); pip caches the wheel afterwards.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
# llama.cpp is built for the machine's CPU, but without ggml's AMX kernels: they crash on some CPUs that
# report AMX (llama.cpp issue 20824, fix pending in PR 26954). Both llama.cpp builds (llama-cpp-python
# and llama-server) read these flags. `make NO_AMX=` keeps AMX.
ifeq ($(shell uname -m),x86_64)
NO_AMX ?= -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
export CFLAGS := $(strip $(CFLAGS) $(NO_AMX))
export CXXFLAGS := $(strip $(CXXFLAGS) $(NO_AMX))
endif

.PHONY: serve test test-fast smoke js-clients py-clients protobuf-trees lint bench llama-server install install-test clean

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

# The JavaScript clients of tests/test_js_clients.py (Vercel AI SDK, openai), when Node.js is there.
js-clients:
	@if command -v npm >/dev/null; then cd tests/js && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the JavaScript client tests will be skipped"; fi

# Python clients whose pins conflict with the test extras, in a venv of their own (tests/clients).
.venv-clients/.installed: tests/clients/requirements.txt
	$(PYTHON) -m venv .venv-clients
	.venv-clients/bin/pip install -q -r tests/clients/requirements.txt
	touch $@

py-clients: .venv-clients/.installed

# protobuf 5 and 6 (with a googleapis-common-protos that fits each), laid over the venv's newest with
# PYTHONPATH by tests/test_protobuf_versions.py: the server and xai-sdk must run on every major the SDK takes.
.venv-protobuf/%/.installed: | $(BIN)/python
	$(BIN)/pip install -q --target .venv-protobuf/$* "protobuf>=$*,<$$(($* + 1))" "googleapis-common-protos>=1.56"
	touch $@

protobuf-trees: .venv-protobuf/5/.installed .venv-protobuf/6/.installed

test: install-test llama-server js-clients py-clients protobuf-trees
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src
	$(BIN)/pytest $(PYTEST_ARGS)

# The tests that need neither the model nor a server process: seconds, for the edit-test loop.
test-fast: install-test
	$(BIN)/pytest -m "not model" $(PYTEST_ARGS)

# `make serve` on a fresh venv without extras: install, serve, one chat completion, stop (CI runs it).
smoke:
	.ci/smoke

# Benchmarks (not tests): localxai vs llama-server built from the same llama.cpp source: the fresh-prompt
# workload (run.py), then the raw decode ceiling, W-conv, W-fit, W-mid, W-quote and W-defaults (workloads.py).
bench: install
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/workloads.py

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) .venv-clients .venv-protobuf build src/*.egg-info
