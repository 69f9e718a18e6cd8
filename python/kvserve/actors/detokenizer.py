"""DetokenizerActor: token ids -> text deltas, stop strings, logprob formatting, finished outputs.

Text is decoded incrementally (never half a character). While a request runs, the last characters that
could begin a stop string are held back; a matched stop string ends the request here and asks the
scheduler to free it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvserve import _core
from kvserve.actors.base import Actor
from kvserve.messages import (
    AbortRequest,
    PooledOutputs,
    PromptLogprobs,
    RequestAccepted,
    RequestFailed,
    RequestsAborted,
    RequestsScheduled,
    SampleLogprobs,
    StreamOutputs,
    TokenDeltas,
)
from kvserve.outputs import PositionLogprobs, RequestOutput, RequestTimes, TokenLogprob
from kvserve.request import PreparedRequest
from kvserve.sampling_params import SamplingParams
from kvserve.text.byte_level_detokenizer import ByteLevelDetokenizer
from kvserve.text.detokenizers import DetokenizerFactory
from kvserve.text.incremental_detokenizer import IncrementalDetokenizer
from kvserve.text.stop_strings import StopStringChecker
from kvserve.tokenizer import Tokenizer

_FINISH_REASONS = {
    int(_core.FinishReason.STOP): "stop",
    int(_core.FinishReason.LENGTH): "length",
    int(_core.FinishReason.ABORT): "abort",
}


@dataclass(slots=True)
class _RequestText:
    params: SamplingParams | None  # None for prefill-only requests, which produce no text
    prompt_token_ids: list[int]
    detokenizer: ByteLevelDetokenizer | IncrementalDetokenizer | None
    stops: StopStringChecker | None
    times: RequestTimes
    # No stop strings and no logprobs: a token's text goes out as the detokenizer returns it.
    plain: bool = False
    num_output_tokens: int = 0
    num_sent_chars: int = 0
    num_cached_tokens: int = 0
    # Prompt logprobs gathered until the first output with tokens carries them ([None] for position 0).
    prompt_logprobs: list[PositionLogprobs | None] | None = None


class DetokenizerActor(Actor):
    name = "detokenizer"

    def __init__(self, tokenizer: Tokenizer, scheduler: Actor, router: Actor) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.router = router
        self.new_detokenizer = DetokenizerFactory(tokenizer.backend)
        self.requests: dict[str, _RequestText] = {}
        self.handles(PreparedRequest, self.on_register)
        self.handles(RequestAccepted, self.on_accepted)
        self.handles(RequestsScheduled, self.on_scheduled)
        self.handles(TokenDeltas, self.on_deltas)
        self.handles(PooledOutputs, self.on_pooled)
        self.handles(RequestsAborted, self.on_aborted)
        self.handles(RequestFailed, self.on_failed)
        self.handles(PromptLogprobs, self.on_prompt_logprobs)

    def on_register(self, prepared: PreparedRequest) -> None:
        params = prepared.request.sampling
        self.requests[prepared.request_id] = _RequestText(
            params=params,
            prompt_token_ids=prepared.prompt_token_ids,
            detokenizer=None
            if params is None
            else self.new_detokenizer(
                prepared.prompt_token_ids, params.skip_special_tokens, params.spaces_between_special_tokens
            ),
            stops=StopStringChecker(params.stop, params.include_stop_str_in_output)
            if params is not None and params.stop
            else None,
            times=RequestTimes(prepared.request.arrival_time),
            plain=params is not None and not params.stop and params.logprobs is None and params.prompt_logprobs is None,
        )

    def on_accepted(self, accepted: RequestAccepted) -> None:
        state = self.requests.get(accepted.request_id)
        if state is not None:
            self.router.send(StreamOutputs([self._output(accepted.request_id, state, "", [])]))

    def on_scheduled(self, message: RequestsScheduled) -> None:
        for request_id in message.request_ids:
            state = self.requests.get(request_id)
            if state is not None:
                state.times = RequestTimes(state.times.arrival, message.time)

    def on_pooled(self, message: PooledOutputs) -> None:
        outputs = []
        for request_id, value in zip(message.request_ids, message.values):
            state = self.requests.pop(request_id, None)
            if state is None:
                continue
            t = state.times
            state.times = RequestTimes(t.arrival, t.first_scheduled, message.time, message.time)
            output = self._output(request_id, state, "", [])
            output.finished, output.finish_reason, output.pooled = True, "stop", value
            outputs.append(output)
        if outputs:
            self.router.send(StreamOutputs(outputs))

    def on_prompt_logprobs(self, message: PromptLogprobs) -> None:
        state = self.requests.get(message.request_id)
        if state is None:
            return
        if state.prompt_logprobs is None:
            state.prompt_logprobs = [None]
        num_top = state.params.prompt_logprobs or 0
        state.prompt_logprobs += [
            self._position_logprobs(message.logprobs, row, num_top) for row in range(len(message.logprobs.ranks))
        ]

    def on_failed(self, failure: RequestFailed) -> None:
        self.requests.pop(failure.request_id, None)
        self.router.send(failure)

    def on_aborted(self, aborted: RequestsAborted) -> None:
        outputs = []
        for request_id in aborted.request_ids:
            state = self.requests.pop(request_id, None)
            if state is not None:  # not already finished by a stop string
                output = self._output(request_id, state, "", [])
                output.finished, output.finish_reason = True, "abort"
                outputs.append(output)
        if outputs:
            self.router.send(StreamOutputs(outputs))

    # Hot path: the one loop over a step's rows. A row of a running request that asked for no stop strings
    # and no logprobs (`_RequestText.plain`) costs a table lookup in its detokenizer and two small objects.
    def on_deltas(self, deltas: TokenDeltas) -> None:
        outputs = []
        requests = self.requests
        finish_reasons = deltas.finish_reasons.tolist()
        num_cached = deltas.num_cached_tokens.tolist()
        now = deltas.time
        rows = zip(deltas.request_ids, deltas.token_ids.tolist(), finish_reasons, num_cached)
        for row, (request_id, token, finish, num_cached_tokens) in enumerate(rows):
            state = requests.get(request_id)
            if state is None:  # finished by a stop string while this step ran
                continue
            state.num_cached_tokens = num_cached_tokens
            t = state.times
            first_token = now if t.first_token is None else t.first_token
            state.times = RequestTimes(t.arrival, t.first_scheduled, first_token, now)
            state.num_output_tokens += 1
            if state.plain and not finish:
                piece = state.detokenizer.push((token,))
                state.num_sent_chars += len(piece)
                outputs.append(self._output(request_id, state, piece, [token]))
                continue
            output = self._advance(request_id, state, token, finish, int(deltas.stop_reasons[row]))
            if deltas.logprobs is not None and state.params.logprobs is not None:
                output.logprobs = [self._position_logprobs(deltas.logprobs, row, state.params.logprobs)]
            if state.params.prompt_logprobs is not None and state.num_output_tokens == 1:
                # A one-token prompt has no prompt logprobs but the first position's None.
                output.prompt_logprobs = state.prompt_logprobs or [None]
            if output.finished:
                del requests[request_id]
                if output.finish_reason == "stop" and finish == 0:
                    self.scheduler.send(AbortRequest(request_id))  # a stop string: the core still runs it
            outputs.append(output)
        if outputs:
            self.router.send(StreamOutputs(outputs))

    def _advance(self, request_id: str, state: _RequestText, token: int, finish: int, stop_token: int) -> RequestOutput:
        finish_reason = _FINISH_REASONS.get(finish)
        params = state.params
        # An EOS or stop token ends the request without being rendered (unless asked to include it).
        if not (finish == int(_core.FinishReason.STOP) and not params.include_stop_str_in_output):
            state.detokenizer.push((token,))
        stop_reason: str | int | None = stop_token if stop_token >= 0 else None
        text = state.detokenizer.output_text
        num_new_chars = len(text) - state.num_sent_chars
        # Like vLLM, stop strings only count once min_tokens have been generated.
        checks_stops = state.stops is not None and state.num_output_tokens > params.min_tokens
        match = state.stops.check(text, num_new_chars) if checks_stops else None
        if match is not None:
            finish_reason, stop_reason = "stop", match.stop_string
            text = text[: match.truncate_to]
        elif finish_reason is not None:
            text = text + state.detokenizer.flush()
        end = len(text) if finish_reason is not None or state.stops is None else len(text) - state.stops.hold_back
        piece = text[state.num_sent_chars : max(end, state.num_sent_chars)]
        state.num_sent_chars += len(piece)
        output = self._output(request_id, state, piece, [token])
        output.finished = finish_reason is not None
        output.finish_reason = finish_reason
        output.stop_reason = stop_reason
        return output

    def _output(self, request_id: str, state: _RequestText, text: str, token_ids: list[int]) -> RequestOutput:
        # Positional: keyword arguments cost half as much again, once per token.
        return RequestOutput(
            request_id,
            text,
            token_ids,
            len(state.prompt_token_ids),
            state.num_output_tokens,
            state.num_cached_tokens,
            state.prompt_token_ids,
            state.times,
        )

    def _position_logprobs(self, logprobs: SampleLogprobs, row: int, num_top: int) -> PositionLogprobs:
        ids = logprobs.token_ids[row, : 1 + num_top].tolist()
        values = logprobs.logprobs[row, : 1 + num_top].tolist()
        decode = self.tokenizer.decode
        sampled = TokenLogprob(ids[0], values[0], int(logprobs.ranks[row]), decode([ids[0]], skip_special_tokens=False))
        top = tuple(
            TokenLogprob(token_id, value, rank, decode([token_id], skip_special_tokens=False))
            for rank, (token_id, value) in enumerate(zip(ids[1:], values[1:]), start=1)
        )
        return PositionLogprobs(sampled, top)
