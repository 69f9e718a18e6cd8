#!/usr/bin/env bash
# Builds the peer of benchmarks/compare_cpu.py: llama.cpp's own C++ server (`llama-server`), from the
# llama.cpp tree vendored in the llama-cpp-python sdist on PyPI, for this CPU (-DGGML_NATIVE=ON). Tests,
# examples and HTTPS are not needed to serve on localhost. Idempotent: the sdist, the unpacked tree and the
# build are cached, so a second run takes no time.
#
#   benchmarks/setup_llamacpp.sh            # prints the paths compare_cpu.py needs as KEY=VALUE lines
#
# Environment: LLAMACPP_VERSION (default below), LLAMACPP_CACHE (default ~/.cache/kvserve/llamacpp),
# PYTHON (default python3, runs pip download), JOBS (default nproc), CMAKE_ARGS (added after our own
# flags, so they win).
set -euo pipefail

VERSION=${LLAMACPP_VERSION:-0.3.36}
CACHE=${LLAMACPP_CACHE:-$HOME/.cache/kvserve/llamacpp}
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}

# -march=native code is only valid on a CPU with the same instruction sets: key the build by them, so a
# home directory carried to another machine rebuilds instead of dying with SIGILL. CMAKE_ARGS are part of the
# key too: a build capped to other instruction sets (compare_cpu.py --isa avx2) sits beside the native one.
CPU_KEY=$(grep -m1 '^flags' /proc/cpuinfo | sha256sum | cut -c1-12)
if [[ -n ${CMAKE_ARGS:-} ]]; then
    CPU_KEY=$CPU_KEY-$(echo "$CMAKE_ARGS" | sha256sum | cut -c1-8)
fi
SDIST_DIR=$CACHE/sdist
SRC=$CACHE/src/llama_cpp_python-$VERSION
SDIST=$SDIST_DIR/llama_cpp_python-$VERSION.tar.gz
SERVER_DIR=$CACHE/llama-server/$VERSION-cpu-$CPU_KEY
LLAMA_SERVER=$SERVER_DIR/build/bin/llama-server
mkdir -p "$SDIST_DIR" "$CACHE/src" "$SERVER_DIR"

log() { echo "setup_llamacpp: $*" >&2; }

if [[ ! -f $SDIST ]]; then
    log "downloading the llama-cpp-python $VERSION sdist"
    "$PYTHON" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$SDIST_DIR"
fi

if [[ ! -f $SRC/vendor/llama.cpp/CMakeLists.txt ]]; then
    log "unpacking the sdist into $CACHE/src"
    rm -rf "$SRC"
    tar -xzf "$SDIST" -C "$CACHE/src"
fi

if [[ ! -x $LLAMA_SERVER ]]; then
    log "building llama.cpp's llama-server ($VERSION) with $JOBS jobs (long on 2 shared cores: ~200 files)"
    start=$SECONDS
    # shellcheck disable=SC2086  # CMAKE_ARGS is a list of flags
    { cmake -S "$SRC/vendor/llama.cpp" -B "$SERVER_DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON ${CMAKE_ARGS:-} \
        && cmake --build "$SERVER_DIR/build" --target llama-server -j "$JOBS"; } \
        > "$SERVER_DIR/build.log" 2>&1 || { tail -40 "$SERVER_DIR/build.log" >&2; exit 1; }
    log "built llama-server in $((SECONDS - start)) s (log: $SERVER_DIR/build.log)"
fi

echo "LLAMACPP_VERSION=$VERSION"
echo "LLAMA_SERVER=$LLAMA_SERVER"
