"""The engine's actors: tokenizer, scheduler, runner and detokenizer, each with one asyncio inbox."""
