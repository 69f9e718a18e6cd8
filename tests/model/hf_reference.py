"""transformers as the oracle for the runner's tests, without the engine: full forward passes, no KV cache."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.cache
def hf_causal_lm(model_dir: Path):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()


def hf_greedy_recomputed(model_dir: Path, prompt_ids: list[int], num_tokens: int) -> list[int]:
    """Greedy tokens, each from a full forward pass over everything so far (no cache to get wrong)."""
    model = hf_causal_lm(model_dir)
    token_ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(num_tokens):
            token_ids.append(int(model(input_ids=torch.tensor([token_ids])).logits[0, -1].argmax()))
    return token_ids[len(prompt_ids) :]


def hf_hidden_and_logprobs(model_dir: Path, prompt_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The final hidden states (after the model's last norm) [n, H] and the next-token log_softmax [V]."""
    model = hf_causal_lm(model_dir)
    with torch.no_grad():
        ids = torch.tensor([prompt_ids])
        hidden = model.model(input_ids=ids).last_hidden_state[0]
        logprobs = model(input_ids=ids).logits[0, -1].float().log_softmax(dim=-1)
    return hidden, logprobs
