#!/usr/bin/env bash
# Builds both targets of docker/Dockerfile.cpu (cpu, sagemaker) with buildah on a debootstrapped Debian
# base, checks each image's configuration, then starts each image's ENTRYPOINT in a container and requires
# its health route, the image's own HEALTHCHECK command, a chat completion from the embedded model and a
# clean stop on SIGTERM, all over 127.0.0.1 from the host.
# No Docker engine is needed: buildah's chroot isolation on the host network. Runs as root (CI does).
#
# Environment: PIP_FIND_LINKS  local directory with the CPU torch wheel (mounted into the build; default:
#                              pip's global find-links)
#              SSL_CERT_FILE   host CA bundle that pip inside the build must trust (mounted into the build)
#              DEBIAN_MIRROR   default: the first Debian mirror in the host's apt sources
#              KVSERVE_CACHE_DIR  default ~/.cache/kvserve: the debootstrap tarball is kept there
# Every failure exits non-zero with the server's log.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm # python3 3.11: the same ABI as the CPU torch wheel in $PIP_FIND_LINKS
BASE_IMAGE=localhost/kvserve-ci/debian:$SUITE-minbase
IMAGE=localhost/kvserve-ci/kvserve
CACHE_DIR=${KVSERVE_CACHE_DIR:-$HOME/.cache/kvserve}
BASE_TAR=$CACHE_DIR/debian-$SUITE-minbase.tar
HOST_CA=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
WHEEL_DIR=${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
START_TIMEOUT_S=180
PROMPT="What is the capital of France?"
ANSWER_WORD=Paris # SmolLM2-135M-Instruct's greedy answer, as transformers gives it

CTR=
SERVER_PID=
LOG=$(mktemp)
cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    sleep 5
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n $CTR ]]; then buildah rm "$CTR" >/dev/null 2>&1 || true; fi
  rm -f "$LOG"
}
trap cleanup EXIT

step() { printf '\n== docker/ci_cpu_image.sh: %s (%ds)\n' "$*" "$SECONDS"; }
die() { printf 'docker/ci_cpu_image.sh: FAILED: %s\n' "$*" >&2; exit 1; }
fail_with_log() {
  echo "---- server log (last 60 lines)" >&2
  tail -n 60 "$LOG" >&2 || true
  die "$*"
}

install_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [[ ${#missing[@]} -eq 0 ]] && return
  step "apt-get install ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

debian_mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
  # deb822 sources (URIs: ...) and one-line sources (deb [opts] URI ...); the main archive ends in /debian.
  local sources=() file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [[ -f $file ]] && sources+=("$file")
  done
  [[ ${#sources[@]} -gt 0 ]] && awk '/^URIs:/ {print $2} /^deb / {print ($2 ~ /^\[/ ? $3 : $2)}' "${sources[@]}" \
    | grep -m1 -E '/debian/?$' || die "no Debian mirror in the apt sources; set DEBIAN_MIRROR"
}

# The base image: Debian minbase from debootstrap, tarred once into the cache, imported when missing.
base_image() {
  if [[ ! -s $BASE_TAR ]]; then
    local mirror rootfs
    mirror=$(debian_mirror)
    rootfs=$(mktemp -d)
    step "debootstrap --variant=minbase $SUITE from $mirror"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
      || { tail -n 30 "$rootfs.log"; die "debootstrap (its partial root file system is left in $rootfs)"; }
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs.log"
    mkdir -p "$CACHE_DIR"
    tar -C "$rootfs" --numeric-owner -cf "$BASE_TAR.tmp" .
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$rootfs"
    buildah rmi "$BASE_IMAGE" >/dev/null 2>&1 || true
  fi
  if ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    step "import $BASE_TAR as $BASE_IMAGE"
    local ctr
    ctr=$(buildah from scratch)
    buildah add "$ctr" "$BASE_TAR" / >/dev/null
    buildah commit --rm -q "$ctr" "$BASE_IMAGE" >/dev/null
  fi
}

# One target of docker/Dockerfile.cpu, built on the imported base; later targets reuse the shared layers.
build_image() {
  local target=$1
  [[ -n $WHEEL_DIR && -d $WHEEL_DIR ]] || die "PIP_FIND_LINKS must name the local directory of the CPU torch wheel"
  [[ -f $HOST_CA ]] || die "no CA bundle at $HOST_CA (set SSL_CERT_FILE)"
  step "buildah bud --target $target docker/Dockerfile.cpu"
  # --layers: steps whose inputs did not change come from the local store (torch and the dependencies);
  # --format docker: OCI image configs have no HEALTHCHECK; --force-rm: a failed step leaves no container.
  buildah bud --isolation chroot --network host --layers --format docker --force-rm \
    -v "$HOST_CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt \
    -v "$WHEEL_DIR:/run/torch-wheels:ro" --build-arg TORCH_FIND_LINKS=/run/torch-wheels \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg REVISION="$REVISION" \
    --target "$target" -t "$IMAGE:$target" -f docker/Dockerfile.cpu . \
    || die "buildah bud --target $target docker/Dockerfile.cpu"
}

# What a container runtime reads from the image: user, port, volume, signal, healthcheck, entrypoint.
check_config() {
  local target=$1 port=$2 health_path=$3 entrypoint=$4
  step "$target: image configuration"
  buildah inspect --type image "$IMAGE:$target" >"$LOG"
  python3 - "$LOG" "$port" "$health_path" "$entrypoint" <<'EOF' || die "$target: image configuration"
import json, sys
path, port, health_path, entrypoint = sys.argv[1:]
config = json.load(open(path))["Docker"]["config"]
expected = {
    "User": "2000:0",
    "ExposedPorts": {f"{port}/tcp": {}},
    "Volumes": {"/var/cache/huggingface": {}},
    "StopSignal": "SIGTERM",
    "Entrypoint": json.loads(entrypoint),
}
wrong = {key: config.get(key) for key, value in expected.items() if config.get(key) != value}
env = dict(item.split("=", 1) for item in config.get("Env") or [])
for key, value in {"HOME": "/home/kvserve", "HF_HOME": "/var/cache/huggingface",
                   "KVSERVE_HEALTH_URL": f"http://127.0.0.1:{port}{health_path}"}.items():
    if env.get(key) != value:
        wrong[f"Env.{key}"] = env.get(key)
if (config.get("Healthcheck") or {}).get("Test", [None])[0] != "CMD":
    wrong["Healthcheck"] = config.get("Healthcheck")
labels = config.get("Labels") or {}
# The revision label is only required to be set: buildah 1.28's layer cache ignores build-arg values in
# ARG/LABEL steps, so a cached LABEL step keeps the commit it was first built at (Docker's cache does not).
if labels.get("org.opencontainers.image.title") != "kvserve" or not labels.get("org.opencontainers.image.revision"):
    wrong["Labels"] = labels
if wrong:
    sys.exit(f"image configuration differs from docker/Dockerfile.cpu: {wrong}")
print("ok:", {key: config[key] for key in expected})
EOF
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts the image's ENTRYPOINT with ARGS in a container on the host network; then, from the host over
# 127.0.0.1: HEALTH_PATH must answer 200, the image's HEALTHCHECK command must pass, a chat completion
# must name $ANSWER_WORD, and SIGTERM must stop the server.
serve_and_check() {
  local target=$1 port=$2 health_path=$3
  shift 3
  local entrypoint healthcheck
  mapfile -t entrypoint < <(buildah inspect --type image --format '{{range .Docker.Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE:$target" | sed '/^$/d')
  mapfile -t healthcheck < <(buildah inspect --type image --format '{{range .Docker.Config.Healthcheck.Test}}{{println .}}{{end}}' "$IMAGE:$target" | sed '/^$/d')
  CTR=$(buildah from --pull=never "$IMAGE:$target")

  step "$target: container runs: ${entrypoint[*]} ${SERVE_ARGS[*]}"
  buildah run --isolation chroot --network host "$@" "$CTR" -- "${entrypoint[@]}" "${SERVE_ARGS[@]}" >"$LOG" 2>&1 &
  SERVER_PID=$!

  local deadline=$((SECONDS + START_TIMEOUT_S))
  until python3 - "http://127.0.0.1:$port$health_path" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[1], timeout=2)
EOF
  do
    kill -0 "$SERVER_PID" 2>/dev/null || fail_with_log "$target: the server exited before $health_path answered"
    ((SECONDS < deadline)) || fail_with_log "$target: no $health_path within ${START_TIMEOUT_S}s"
    sleep 1
  done
  step "$target: $health_path answered on 127.0.0.1:$port"

  buildah run --isolation chroot --network host --env KVSERVE_HEALTH_URL="http://127.0.0.1:$port$health_path" \
    "$CTR" -- "${healthcheck[@]:1}" || fail_with_log "$target: the image's HEALTHCHECK command failed on a live server"
  step "$target: HEALTHCHECK command passed"

  python3 - "$port" "$PROMPT" "$ANSWER_WORD" <<'EOF' || fail_with_log "$target: chat completion"
import json, sys, urllib.request
port, prompt, answer_word = sys.argv[1:]
request = urllib.request.Request(
    f"http://127.0.0.1:{port}/v1/chat/completions",
    data=json.dumps({
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16,
        "temperature": 0,
    }).encode(),
    headers={"Content-Type": "application/json"},
)
body = json.load(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=120))
content = body["choices"][0]["message"]["content"]
print("chat completion:", json.dumps(content), "usage:", body["usage"])
if answer_word not in content:
    sys.exit(f"expected {answer_word!r} in the greedy answer")
EOF

  step "$target: SIGTERM"
  kill -TERM "$SERVER_PID"
  local stop_deadline=$((SECONDS + 30))
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    ((SECONDS < stop_deadline)) || fail_with_log "$target: still running 30s after SIGTERM"
    sleep 1
  done
  wait "$SERVER_PID" || true
  SERVER_PID=
  buildah rm "$CTR" >/dev/null
  CTR=
  step "$target: stopped"
}

install_tools
base_image
build_image cpu
build_image sagemaker

# The default target: `docker run IMAGE [flags]`, here on a free loopback port.
check_config cpu 8000 /health '["kvserve", "serve"]'
port=$(free_port)
SERVE_ARGS=(--host 127.0.0.1 --port "$port")
serve_and_check cpu "$port" /health

# SageMaker runs `docker run IMAGE serve`; SAGEMAKER_BIND_TO_PORT moves it off 8080 to a free port here.
check_config sagemaker 8080 /ping '["kvserve-sagemaker"]'
port=$(free_port)
SERVE_ARGS=(serve --host 127.0.0.1) # after the entry point's --host 0.0.0.0: the last one wins
serve_and_check sagemaker "$port" /ping --env SAGEMAKER_BIND_TO_PORT="$port"

step "passed"
