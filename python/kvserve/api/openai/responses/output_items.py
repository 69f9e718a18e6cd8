"""A response's output items, built from the parsed answer as it grows; every change is a stream event.

    reasoning      rs_…   output_item.added, content_part.added (reasoning_text), reasoning_text.delta…,
                          reasoning_text.done, content_part.done, output_item.done
    message        msg_…  output_item.added, content_part.added (output_text), output_text.delta…,
                          output_text.done, content_part.done, output_item.done
    function_call  fc_…   output_item.added (name, call_id call_…), function_call_arguments.delta…,
                          function_call_arguments.done, output_item.done

A non-streamed response feeds the whole parsed answer in one delta and keeps only the items, so both paths
build the same output. Items are numbered in the order they open (the SDK's stream state relies on it):
reasoning first, then the answer, then the calls. Reasoning closes when the answer or a call begins (the
reasoning parser has then decided it); the others close at the end, since the answer may grow after a call.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from kvserve.text.message_parser import MessageDelta

ItemStatus = Literal["in_progress", "completed", "incomplete"]
_PARTS = {"reasoning": "reasoning_text", "message": "output_text"}
_TEXT_EVENTS = {"reasoning": "response.reasoning_text", "message": "response.output_text"}


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(slots=True)
class _Item:
    kind: Literal["reasoning", "message", "function_call"]
    id: str
    text: str = ""  # the reasoning, the answer, or the call's arguments
    name: str = ""
    call_id: str = ""
    status: ItemStatus | None = None  # set when the item is done

    def part(self) -> dict[str, Any]:
        if self.kind == "reasoning":
            return {"type": "reasoning_text", "text": self.text}
        return {"type": "output_text", "text": self.text, "annotations": []}

    def as_dict(self, status: ItemStatus) -> dict[str, Any]:
        if self.kind == "function_call":
            return {
                "id": self.id,
                "type": "function_call",
                "call_id": self.call_id,
                "name": self.name,
                "arguments": self.text,
                "status": status,
            }
        parts = [self.part()] if status != "in_progress" else []
        if self.kind == "reasoning":
            return {"id": self.id, "type": "reasoning", "summary": [], "content": parts, "status": status}
        return {"id": self.id, "type": "message", "role": "assistant", "status": status, "content": parts}


class OutputItems:
    """The items of one response and the events that built them (plain dicts; the shaper numbers them)."""

    def __init__(self) -> None:
        self.items: list[_Item] = []
        self._open: dict[str, _Item] = {}  # the open reasoning and message items
        self._calls: dict[int, _Item] = {}  # by the call's index in the answer

    def _add(self, item: _Item) -> list[dict[str, Any]]:
        self.items.append(item)
        index = len(self.items) - 1
        events = [{"type": "response.output_item.added", "output_index": index, "item": item.as_dict("in_progress")}]
        if item.kind != "function_call":
            events.append(self._part_event("added", index, item, {**item.part(), "text": ""}))
        return events

    @staticmethod
    def _part_event(which: str, index: int, item: _Item, part: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": f"response.content_part.{which}",
            "item_id": item.id,
            "output_index": index,
            "content_index": 0,
            "part": part,
        }

    def _text(self, kind: Literal["reasoning", "message"], text: str) -> list[dict[str, Any]]:
        events = []
        item = self._open.get(kind)
        if item is None:
            item = self._open[kind] = _Item(kind, item_id("rs" if kind == "reasoning" else "msg"))
            events += self._add(item)
        item.text += text
        event = {
            "type": f"{_TEXT_EVENTS[kind]}.delta",
            "item_id": item.id,
            "output_index": self.items.index(item),
            "content_index": 0,
            "delta": text,
        }
        if kind == "message":
            event["logprobs"] = []
        events.append(event)
        return events

    def apply(self, delta: MessageDelta) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if delta.reasoning:
            events += self._text("reasoning", delta.reasoning)
        if (delta.content or delta.calls) and (reasoning := self._open.get("reasoning")) is not None:
            events += self._done(reasoning, "completed")
            del self._open["reasoning"]
        if delta.content:
            events += self._text("message", delta.content)
        for call in delta.calls:
            item = self._calls.get(call.index)
            if item is None:
                item = self._calls[call.index] = _Item(
                    "function_call", item_id("fc"), name=call.name or "", call_id=item_id("call")
                )
                events += self._add(item)
            if call.arguments:
                item.text += call.arguments
                events.append(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item.id,
                        "output_index": self.items.index(item),
                        "delta": call.arguments,
                    }
                )
        return events

    def _done(self, item: _Item, status: ItemStatus) -> list[dict[str, Any]]:
        item.status = status
        index = self.items.index(item)
        done = {"type": "response.output_item.done", "output_index": index, "item": item.as_dict(status)}
        if item.kind == "function_call":
            arguments = {
                "type": "response.function_call_arguments.done",
                "item_id": item.id,
                "output_index": index,
                "name": item.name,
                "arguments": item.text,
            }
            return [arguments, done]
        text = {
            "type": f"{_TEXT_EVENTS[item.kind]}.done",
            "item_id": item.id,
            "output_index": index,
            "content_index": 0,
            "text": item.text,
        }
        if item.kind == "message":
            text["logprobs"] = []
        return [text, self._part_event("done", index, item, item.part()), done]

    def close(self, status: ItemStatus) -> list[dict[str, Any]]:
        """The done events of the items still open, in output order."""
        return [event for item in self.items if item.status is None for event in self._done(item, status)]

    def output(self, status: ItemStatus) -> list[dict[str, Any]]:
        """The items as the response lists them; those still open end with `status`."""
        return [item.as_dict(item.status or status) for item in self.items]
