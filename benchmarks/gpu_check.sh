#!/usr/bin/env bash
# One command for a GPU machine (see benchmarks/README.md): installs the Python wheels brought along, builds
# the extension (C++ core + CUDA kernels), runs the `cuda` tests, the kernel benchmarks, a GEMM tuning run and
# the end-to-end benchmarks, and writes logs and JSON to OUT_DIR.
# Usage: benchmarks/gpu_check.sh OUT_DIR [WHEEL_DIR (default .whl)]
# GPU_CHECK_STEPS picks steps after the build (default "tests kernels tune e2e"), to split a run in two.
set -uo pipefail

out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [WHEEL_DIR]}
wheels=${2:-.whl}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0
steps=" ${GPU_CHECK_STEPS:-tests kernels tune e2e} "

# The image lacks some of our pure-Python dependencies and nvidia-cutlass (headers for the build).
site=/tmp/kvserve-site
$py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl || exit 1
export PYTHONPATH="$PWD/python:$site"

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  $py -c 'import torch; print("torch", torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'
  nvcc --version | tail -1
} > "$out/env.txt" 2>&1

# A build dir, not an install: the modules are copied next to the sources on PYTHONPATH. Only sm_90a here
# (the card is Hopper); CI builds the default 80;90a. KVSERVE_CUDA=ON: no kernels is a failure, not a skip.
build=build/gpu-check
start=$(date +%s)
if cmake -S . -B "$build" -G Ninja -DKVSERVE_CUDA=ON -DKVSERVE_CUDA_ARCHS=90a -DPython_EXECUTABLE="$(command -v $py)" \
     -Dpybind11_DIR="$($py -c 'import pybind11; print(pybind11.get_cmake_dir())')" > "$out/build.log" 2>&1 &&
   cmake --build "$build" -j "$(nproc)" >> "$out/build.log" 2>&1; then
  cp "$build"/_core*.so "$build"/_kernels*.so python/kvserve/
  echo "build: $(($(date +%s) - start)) s" | tee -a "$out/build.log"
else
  echo "build FAILED (see build.log)"; tail -30 "$out/build.log"; exit 1
fi

if [[ $steps == *" tests "* ]]; then
  timeout 240 $py -m pytest -p no:cacheprovider -q -m cuda tests/kernels tests/model/test_gpu_runner.py \
    --junitxml="$out/pytest.xml" 2>&1 | tee "$out/pytest.log" | tail -25
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

if [[ $steps == *" kernels "* ]]; then
  timeout 120 $py benchmarks/kernels/bench_kernels.py --json "$out/bench_kernels.json" 2>&1 | tee "$out/bench.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

# GEMM tuning on Llama-3-8B's linear shapes (bf16 and fp8, M = 1, 16, 256, 4096): the tuned table (commit it as
# python/kvserve/ops/gemm_tables/<device>.json) and every timing, with cuBLAS and torch._scaled_mm alongside.
if [[ $steps == *" tune "* ]]; then
  timeout 120 $py benchmarks/kernels/tune_gemm.py --kinds bf16 fp8 --m 1 16 256 4096 --repeats 10 \
    --table "$out/gemm_table.json" --json "$out/tune_gemm.json" 2>&1 | tee "$out/tune_gemm.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

# End to end, random bf16 weights of Llama-3.2-1B and Llama-3-8B shapes: batch-1 decode against the weight
# roofline (with CUDA graphs), then 64 and 256 concurrent requests against transformers' generate.
if [[ $steps == *" e2e "* ]]; then
  timeout 120 $py benchmarks/bench_latency.py --output-len 256 --json "$out/bench_latency.json" 2>&1 |
    tee "$out/bench_latency.log" | grep -v '^Capturing'
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  timeout 240 $py benchmarks/bench_throughput.py --device cuda --repeats 1 --input-len 128 --output-len 128 \
    --json "$out/bench_throughput.json" 2>&1 | tee "$out/bench_throughput.log" | grep -v '^Capturing'
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
exit $status
