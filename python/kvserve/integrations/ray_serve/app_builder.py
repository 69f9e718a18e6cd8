"""build_app(args): the Ray Serve application that `serve run` and Serve config files import.

`args` names `kvserve serve`'s flags, by flag or by field (`max_model_len`, `kv-cache-memory`, `model`),
with values as a config file's YAML gives them or as the strings of `serve run IMPORT_PATH key=value`:

    {"model": "Qwen/Qwen3-0.6B", "max_model_len": 4096, "kv_cache_memory": "2GiB",
     "served_model_name": ["qwen3"], "enable_prefix_caching": False,
     "deployment": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 8}}}

`deployment` (optional) holds Ray's deployment options (num_replicas, autoscaling_config,
max_ongoing_requests, max_queued_requests, ray_actor_options, ...); a config file's `deployments:` section
overrides them. The flags are checked here, once, so that a bad value fails `serve run` with its reason
instead of failing every replica.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import ray
from ray.serve import Application

from kvserve.cli import add_serve_arguments, engine_config_from_args
from kvserve.integrations.ray_serve.deployment import KvserveDeployment

# Ray's proxy owns the listening socket: its address is Serve's http_options (`serve start --http-host`).
_PROXY_FLAGS = ("host", "port")
_TRUE_WORDS = ("1", "true", "yes", "on")


def build_app(args: Mapping[str, Any] | None = None) -> Application:
    options = dict(args or {})
    deployment_options = dict(options.pop("deployment", None) or {})
    namespace = serve_namespace(options)
    engine_config = engine_config_from_args(namespace)
    # A replica takes as many requests as its engine batches; beyond that Ray's router holds them (and sends
    # them to a replica with room), which is what its autoscaler's target_ongoing_requests counts against.
    deployment_options.setdefault("max_ongoing_requests", namespace.max_num_seqs)
    actor_options = dict(deployment_options.pop("ray_actor_options", None) or {})
    # A tensor-parallel replica's workers use the GPUs Ray gives it (its CUDA_VISIBLE_DEVICES): one per rank.
    num_gpus = replica_gpus(engine_config.device) * engine_config.tensor_parallel_size
    actor_options.setdefault("num_gpus", num_gpus)
    return KvserveDeployment.options(ray_actor_options=actor_options, **deployment_options).bind(namespace)


def serve_namespace(options: Mapping[str, Any]) -> argparse.Namespace:
    """`kvserve serve`'s flags parsed from a mapping, by the CLI's own parser (its types, choices, sizes)."""
    parser = argparse.ArgumentParser(prog="kvserve.integrations.ray_serve:build_app", exit_on_error=False)
    add_serve_arguments(parser)
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse lists its actions only here
        for name in (action.dest, *(flag.removeprefix("--") for flag in action.option_strings)):
            actions[name.replace("-", "_")] = action
    positional: list[str] = []
    argv: list[str] = []
    for key, value in options.items():
        name = key.replace("-", "_")
        if name in _PROXY_FLAGS:
            raise ValueError(f"{key!r} is Ray Serve's to set: its proxy listens where http_options say")
        action = actions.get(name)
        if action is None or action.dest == "help":
            raise ValueError(f"{key!r} is not a `kvserve serve` flag (see `kvserve serve --help`)")
        if not action.option_strings:
            positional.append(str(value))
        elif action.nargs == 0:  # a switch: on, or (where the flag has a --no- form) off
            on = value if isinstance(value, bool) else str(value).strip().lower() in _TRUE_WORDS
            negative = "--no-" + action.option_strings[0].removeprefix("--")
            if on:
                argv.append(action.option_strings[0])
            elif negative in action.option_strings:
                argv.append(negative)
        elif isinstance(value, list | tuple):
            argv += [action.option_strings[0], *map(str, value)]
        elif value is not None:
            argv += [action.option_strings[0], str(value)]
    try:
        return parser.parse_args(positional + argv)
    except argparse.ArgumentError as e:
        raise ValueError(str(e)) from None


def replica_gpus(device: str) -> int:
    """GPUs per replica: one for CUDA (Ray then makes it the replica's cuda:0), none for CPU; `auto` means
    CUDA when the cluster has GPUs."""
    if device.startswith("cuda"):
        return 1
    if device != "auto":
        return 0
    if not ray.is_initialized():
        ray.init()  # what serve.run would do next; the cluster's resources decide `auto`
    return 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
