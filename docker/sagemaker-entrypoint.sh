#!/bin/sh
# SageMaker starts an inference container as `docker run IMAGE serve` and sends HTTP to port 8080
# (SAGEMAKER_BIND_TO_PORT when it runs several containers). The model is what SageMaker unpacked into
# /opt/ml/model (a Hugging Face directory, or one .gguf file), else the embedded default model.
# Further arguments are kvserve engine flags.
set -eu
if [ "${1:-}" = serve ]; then
  shift
fi
port="${SAGEMAKER_BIND_TO_PORT:-8080}"
model_dir=/opt/ml/model
if [ -f "$model_dir/config.json" ]; then
  exec kvserve serve "$model_dir" --host 0.0.0.0 --port "$port" "$@"
fi
for gguf in "$model_dir"/*.gguf; do
  if [ -f "$gguf" ]; then
    exec kvserve serve "$gguf" --host 0.0.0.0 --port "$port" "$@"
  fi
done
exec kvserve serve --host 0.0.0.0 --port "$port" "$@"
