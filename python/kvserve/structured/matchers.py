"""The grammar state of the persistent batch's constrained slots: one llguidance matcher per slot.

Where the state lives, and why it needs no rollback:
- The runner's InputBatch owns a slot's matcher from the request's arrival (NewRequest) to its end
  (finished_slots), like every other per-slot sampling state; the constraint stage asks `fill` for the step's
  masks, and `accept` advances each matcher with the token its row sampled (InputBatch.record_sampled).
- The matcher has then consumed exactly the request's output tokens, the tokens the core keeps. Preemption by
  recompute keeps them too: the request keeps its slot and its outputs, recomputes their KV, and samples its
  next token from the same position, so the matcher is already where it must be. Nothing rolls back, because
  no accepted token is ever taken back (there is no speculative decoding yet; it would `rollback` here).
- A matcher that fails (a token it did not allow, which the mask prevents, or a grammar broken at run time)
  allows only EOS from then on: the request ends, the engine does not.
"""

from __future__ import annotations

import logging

import llguidance
import llguidance.numpy
import numpy as np

from kvserve.structured.compiler import GrammarCompiler
from kvserve.structured.spec import GrammarSpec

logger = logging.getLogger(__name__)


class GrammarMatchers:
    def __init__(self, compiler: GrammarCompiler, vocab_size: int) -> None:
        self.compiler = compiler
        self.width = -(-vocab_size // 32)  # the logits' bitmask width; llguidance's may be wider
        self.matchers: dict[int, llguidance.LLMatcher] = {}
        # Sized at the first constrained step: llguidance's tokenizer (~30 MiB for a 49k vocabulary) is
        # built on first use, so a server that never constrains an output never holds it.
        self._words = np.zeros((0, 0), dtype=np.int32)

    def add(self, slot: int, spec: GrammarSpec) -> None:
        self.matchers[slot] = self.compiler.matcher(spec)

    def remove(self, slot: int) -> None:
        self.matchers.pop(slot, None)

    def fill(self, slots: list[int]) -> np.ndarray:
        """The next-token masks of these slots' matchers: [len(slots), width] int32.

        One matcher after another (llguidance drops the GIL in each): ~13 µs a mask for a JSON schema over a
        49k vocabulary, while its thread-pool executor (fill_next_token_bitmask_par) took 40x longer for 16
        masks on a loaded 2-core machine (benchmarks/RESULTS.md)."""
        if len(self._words) < len(slots):
            ll_width = -(-self.compiler.tokenizer.vocab_size // 32)
            self._words = np.zeros((max(len(slots), 2 * len(self._words)), ll_width), dtype=np.int32)
        words = self._words[: len(slots)]
        for row, slot in enumerate(slots):
            llguidance.numpy.fill_next_token_bitmask(self.matchers[slot], words, row)
        return words[:, : self.width]

    def accept(self, slot: int, token_id: int) -> None:
        matcher = self.matchers[slot]
        if not matcher.consume_token(token_id) and token_id not in self.compiler.tokenizer.eos_tokens:
            logger.warning("slot %d: the grammar refused token %d: %s", slot, token_id, matcher.get_error()[:200])
