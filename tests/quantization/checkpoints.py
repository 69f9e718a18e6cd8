"""Tiny 8-bit checkpoints in the layouts vLLM and llm-compressor write, and their transformers oracle.

`quantize_checkpoint` turns a tiny float32 model directory into a quantized one: every decoder projection's
weight in fp8 e4m3 (or int8) with a `weight_scale` (per tensor: a scalar; per channel: [N, 1]), optional static
`input_scale`s, and the `quantization_config` of config.json. `fake_quant_oracle` is transformers on the
dequantized weights with every quantized projection's input rounded per token as W8A8 does: the function the
quantized model computes, written independently of kvserve's code.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

QMAX = {torch.float8_e4m3fn: 448.0, torch.int8: 127.0}
PROJECTION = re.compile(r"model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight")


def quantize_rows(x: torch.Tensor, dtype: torch.dtype, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization of a 2-D tensor: scales [rows, 1] per row, else a 0-d scale."""
    absmax = x.abs().amax(dim=-1, keepdim=True) if per_row else x.abs().amax()
    scale = (absmax / QMAX[dtype]).clamp_min(1e-12)
    scaled = (x / scale).clamp(-QMAX[dtype], QMAX[dtype])
    return (scaled.round() if dtype == torch.int8 else scaled).to(dtype), scale


def fake_quant(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x rounded to `dtype` per token (last dimension) and back to float32."""
    q, scale = quantize_rows(x.float(), dtype, per_row=True)
    return q.float() * scale


def compressed_tensors_config(kind: str, ignore: list[str]) -> dict:
    """llm-compressor's W8A8 quantization_config: per-channel 8-bit weights of `kind` ("float": fp8 e4m3,
    "int": int8) and dynamic per-token activations of the same type."""
    args = {"num_bits": 8, "type": kind, "symmetric": True}
    return {
        "quant_method": "compressed-tensors",
        "format": f"{kind}-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {**args, "strategy": "channel", "dynamic": False},
                "input_activations": {**args, "strategy": "token", "dynamic": True},
            }
        },
        "ignore": ignore,
    }


# Layouts: (quantization_config, weight type, per-channel weight scales, static input scales written)
LAYOUTS = {
    # vLLM / AutoFP8: per-tensor scales as scalar tensors, static activation scales in the checkpoint.
    "fp8-static": (
        {"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": ["lm_head"]},
        torch.float8_e4m3fn,
        False,
        True,
    ),
    # llm-compressor FP8_DYNAMIC, one layer's down_proj left in float32.
    "ct-fp8-channel": (
        compressed_tensors_config("float", ["lm_head", "re:.*layers\\.1\\.mlp\\.down_proj"]),
        torch.float8_e4m3fn,
        True,
        False,
    ),
    # llm-compressor W8A8 int8.
    "ct-int8-channel": (compressed_tensors_config("int", ["lm_head"]), torch.int8, True, False),
}


def _ignored(name: str, ignore: list[str]) -> bool:
    module = name.removesuffix(".weight")
    return any(
        re.fullmatch(entry[3:], module) if entry.startswith("re:") else module.endswith(entry) for entry in ignore
    )


def quantize_checkpoint(src: Path, dst: Path, layout: str) -> Path:
    """A quantized copy of the float checkpoint `src` in `layout` (a key of LAYOUTS)."""
    qconfig, dtype, per_channel, static_inputs = LAYOUTS[layout]
    ignore = qconfig.get("ignore") or qconfig.get("ignored_layers") or []
    dst.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in load_file(src / "model.safetensors").items():
        if not PROJECTION.fullmatch(name) or _ignored(name, ignore):
            tensors[name] = tensor
            continue
        q, scale = quantize_rows(tensor.float(), dtype, per_row=per_channel)
        stem = name.removesuffix(".weight")
        tensors[name] = q
        tensors[f"{stem}.weight_scale"] = scale.float().contiguous()
        if static_inputs:
            tensors[f"{stem}.input_scale"] = torch.tensor(0.05)
    save_file(tensors, dst / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = qconfig
    (dst / "config.json").write_text(json.dumps(config))
    for file in src.iterdir():
        if file.name not in ("config.json", "model.safetensors"):
            shutil.copy(file, dst / file.name)
    return dst


def dequantized_state(model_dir: Path) -> dict[str, torch.Tensor]:
    """The float32 weights an 8-bit checkpoint stands for (weight * weight_scale), scales dropped."""
    tensors = load_file(model_dir / "model.safetensors")
    out = {}
    for name, tensor in tensors.items():
        if name.endswith(("weight_scale", "input_scale")):
            continue
        scale = tensors.get(name.removesuffix(".weight") + ".weight_scale")
        out[name] = tensor.float() if scale is None else tensor.float() * scale.float()
    return out


def fake_quant_oracle(float_dir: Path, state: dict[str, torch.Tensor], quantized: set[str], dtype: torch.dtype):
    """transformers' model of `float_dir` with weights `state`, whose projections named in `quantized` (module
    names) see per-token fake-quantized inputs."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(float_dir, dtype="float32").eval()
    model.load_state_dict(state, strict=False)
    for name, module in model.named_modules():
        if name in quantized:
            module.register_forward_pre_hook(lambda _m, args: (fake_quant(args[0], dtype),))
    return model


def greedy(model, prompt_ids: list[int], num_tokens: int) -> list[int]:
    """Greedy tokens, each from a full forward pass (no cache to get wrong)."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(num_tokens):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt_ids) :]
