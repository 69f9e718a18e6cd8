#!/usr/bin/env bash
# Sets up the llama-cpp-python side of benchmarks/compare_cpu.py: a venv of its own (.venv-llamacpp) with
# llama-cpp-python[server] built from source for this CPU, and the sdist unpacked so that its vendored
# llama.cpp converter (convert_hf_to_gguf.py) can be run. Idempotent: the sdist, the unpacked tree and the
# wheel are cached, so a second run, or a fresh venv on the same machine, takes seconds.
#
# The converter runs in kvserve's own .venv, which has the torch, transformers and numpy it imports; the
# one module missing there, sentencepiece (imported before the converter sees that the model has no
# tokenizer.model), goes to a directory of its own that the caller puts on PYTHONPATH, so that .venv stays
# as `make install` left it.
#
#   benchmarks/setup_llamacpp.sh            # prints the paths compare_cpu.py needs as KEY=VALUE lines
#
# Environment: LLAMACPP_VERSION (default below), LLAMACPP_CACHE (default ~/.cache/kvserve/llamacpp),
# LLAMACPP_VENV (default .venv-llamacpp at the repository root), PYTHON (default python3, makes that venv),
# KVSERVE_PYTHON (default .venv/bin/python, runs the converter), CMAKE_ARGS (added after our own flags, so
# they win).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=${LLAMACPP_VERSION:-0.3.36}
CACHE=${LLAMACPP_CACHE:-$HOME/.cache/kvserve/llamacpp}
VENV=${LLAMACPP_VENV:-$ROOT/.venv-llamacpp}
PYTHON=${PYTHON:-python3}
KVSERVE_PYTHON=${KVSERVE_PYTHON:-$ROOT/.venv/bin/python}
JOBS=$(nproc)

# -march=native code is only valid on a CPU with the same instruction sets: key the wheel cache by them,
# so a home directory carried to another machine rebuilds instead of dying with SIGILL.
CPU_KEY=$(grep -m1 '^flags' /proc/cpuinfo | sha256sum | cut -c1-12)
SDIST_DIR=$CACHE/sdist
SRC=$CACHE/src/llama_cpp_python-$VERSION
WHEEL_DIR=$CACHE/wheels/$VERSION-cpu-$CPU_KEY
SDIST=$SDIST_DIR/llama_cpp_python-$VERSION.tar.gz
CONVERTER_SITE=$CACHE/converter-site
mkdir -p "$SDIST_DIR" "$CACHE/src" "$WHEEL_DIR"

log() { echo "setup_llamacpp: $*" >&2; }

if [[ ! -f $SDIST ]]; then
    log "downloading the llama-cpp-python $VERSION sdist"
    "$PYTHON" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$SDIST_DIR"
fi

# Unpacked once, for the converter; the wheel is built from the tarball so that the tree stays pristine.
if [[ ! -f $SRC/vendor/llama.cpp/convert_hf_to_gguf.py ]]; then
    log "unpacking the sdist into $CACHE/src"
    rm -rf "$SRC"
    tar -xzf "$SDIST" -C "$CACHE/src"
fi

shopt -s nullglob
wheels=("$WHEEL_DIR"/llama_cpp_python-"$VERSION"-*.whl)
if (( ${#wheels[@]} == 0 )); then
    log "building llama-cpp-python $VERSION from source with $JOBS jobs (several minutes on 2 cores)"
    # The multimodal (llava/mtmd) library is not needed to serve a text model; skipping it shortens the build.
    start=$SECONDS
    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}" CMAKE_BUILD_PARALLEL_LEVEL=$JOBS \
        "$PYTHON" -m pip wheel -v --no-deps -w "$WHEEL_DIR" "$SDIST" \
        > "$WHEEL_DIR/build.log" 2>&1 || { tail -40 "$WHEEL_DIR/build.log" >&2; exit 1; }
    log "built in $((SECONDS - start)) s (log: $WHEEL_DIR/build.log)"
    wheels=("$WHEEL_DIR"/llama_cpp_python-"$VERSION"-*.whl)
fi
WHEEL=${wheels[0]}

[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
installed=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null || true)
if [[ $installed != "$VERSION" ]] || ! "$VENV/bin/python" -c 'import llama_cpp.server.app' 2>/dev/null; then
    log "installing $(basename "$WHEEL")[server] into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL[server]"
fi

if [[ ! -d $CONVERTER_SITE/sentencepiece ]]; then
    log "installing sentencepiece for the converter into $CONVERTER_SITE"
    "$KVSERVE_PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$CONVERTER_SITE" \
        "sentencepiece>=0.1.98,<0.3.0"
fi

echo "LLAMACPP_VERSION=$VERSION"
echo "LLAMACPP_PYTHON=$VENV/bin/python"
echo "LLAMACPP_WHEEL=$WHEEL"
echo "LLAMACPP_CONVERTER=$SRC/vendor/llama.cpp/convert_hf_to_gguf.py"
echo "LLAMACPP_CONVERTER_PYTHONPATH=$CONVERTER_SITE"
