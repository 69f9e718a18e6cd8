"""Structured outputs through the engine: every constrained output matches its schema, regex, choice or grammar
(checked by reference validators), across seeds, with preemption, and bad specs never reach the engine."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest

from kvserve.config import EngineConfig
from kvserve.errors import InvalidRequestError
from kvserve.sampling_params import SamplingParams
from kvserve.structured.spec import GrammarSpec
from tests.engine_helpers import MiB, generate, run_with_engine

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "pet": {"enum": ["cat", "dog", "none"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
    },
    "required": ["name", "age", "pet"],
    "additionalProperties": False,
}
REGEX = r"(yes|no|maybe)-[0-9]{1,3}"
CHOICES = ["red", "green", "blue and yellow"]
GRAMMAR = 'root ::= "(" expr ")"\nexpr ::= num | num "+" num\nnum ::= [0-9] | [1-9] [0-9]'
NUM_SEEDS = 12


def check(spec: GrammarSpec, text: str) -> None:
    if spec.kind == "json":
        jsonschema.validate(json.loads(text), json.loads(spec.source))
    elif spec.kind == "json_object":
        assert isinstance(json.loads(text), dict)
    elif spec.kind == "regex":
        assert re.fullmatch(spec.source, text), text
    elif spec.kind == "choice":
        assert text in json.loads(spec.source), text
    else:
        assert re.fullmatch(r"\((0|[1-9][0-9]?)(\+(0|[1-9][0-9]?))?\)", text), text


SPECS = [
    GrammarSpec.json_schema(SCHEMA),
    GrammarSpec.json_schema(SCHEMA, disable_any_whitespace=True),
    GrammarSpec("json_object", disable_any_whitespace=True),
    GrammarSpec("regex", REGEX),
    GrammarSpec.choices(CHOICES),
    GrammarSpec("grammar", GRAMMAR),
]


@pytest.fixture(scope="module")
def config(tiny_model_dir) -> EngineConfig:
    return EngineConfig(model=str(tiny_model_dir("llama")), kv_cache_memory=4 * MiB, block_size=16)


def test_outputs_match_their_spec_for_every_seed(config):
    async def body(engine):
        jobs = []
        for s, spec in enumerate(SPECS):
            # json_object is open-ended: a random model fills it until max_tokens unless EOS is likely.
            max_tokens = 60 if spec.kind == "json_object" else 200
            for seed in range(NUM_SEEDS):
                params = SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed, structured=spec)
                jobs.append((spec, generate(engine, "Answer:", params, f"s{s}-{seed}")))
        results = await asyncio.gather(*(job for _, job in jobs))
        return [(spec, result) for (spec, _), result in zip(jobs, results)]

    for spec, (_, text, final) in run_with_engine(config, body):
        if spec.kind == "json_object" and final.finish_reason == "length":
            continue  # cut off by max_tokens: not whole JSON, which is what length means
        assert final.finish_reason == "stop", (spec, text)
        check(spec, text)


def test_preempted_requests_keep_their_grammar_state(tiny_model_dir):
    """12 blocks of 16 tokens for 8 requests of ~70 tokens each: the core preempts and recomputes, and every
    output still matches (the matcher follows exactly the outputs the core keeps)."""
    config = EngineConfig(
        model=str(tiny_model_dir("llama")), kv_cache_memory=12 * 8192, block_size=16, max_model_len=128
    )
    spec = GrammarSpec("regex", r"[a-z]{40,60}\.")
    preemptions = []

    async def body(engine):
        engine.add_stats_listener(lambda stats: preemptions.append(stats.num_preemptions))
        params = [SamplingParams(max_tokens=80, seed=seed, structured=spec) for seed in range(8)]
        return await asyncio.gather(*(generate(engine, "Go:", p, f"p{i}") for i, p in enumerate(params)))

    results = run_with_engine(config, body)
    assert sum(preemptions) > 0
    for _, text, final in results:
        assert final.finish_reason == "stop", text
        check(spec, text)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GrammarSpec("regex", "[a-"), "invalid structured output regex"),
        (GrammarSpec("json", '{"type": "nonsense"}'), "invalid structured output json"),
        (GrammarSpec("json", "not json"), "invalid structured output json"),
        (GrammarSpec("grammar", "root ::= foo"), "invalid structured output grammar"),
    ],
)
def test_bad_specs_are_refused_before_admission(config, spec, message):
    async def body(engine):
        with pytest.raises(InvalidRequestError, match=message):
            await generate(engine, "x", SamplingParams(max_tokens=4, structured=spec), "bad")
        # the engine keeps serving, constrained requests included
        _, text, _ = await generate(engine, "x", SamplingParams(max_tokens=8, structured=SPECS[4]), "good")
        return text, engine.is_healthy

    text, healthy = run_with_engine(config, body)
    assert healthy and text in CHOICES
