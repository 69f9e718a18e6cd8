"""`kvserve bench serve`: a load generator for OpenAI-compatible servers whose metrics are computed the way
`vllm bench serve` computes them, so that kvserve and vLLM numbers can be compared side by side.

Modules, lowest layer first:

- `datasets`: the prompts (random, ShareGPT, prefix repetition) and the tokenizer that sizes them.
- `client`: one streamed HTTP request, timed chunk by chunk, as a `RequestOutcome`.
- `metrics`: `RequestOutcome`s to TTFT/TPOT/ITL/E2EL distributions and throughputs.
- `serve`: arrivals, concurrency, the printed table, the JSON result and the CLI.
- `plots`: latency CDFs of one run and throughput/TTFT sweeps over several.
"""
