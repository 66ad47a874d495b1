"""Tool calls out of generated text: `<tool_call>{"name", "arguments"}</tool_call>` blocks, parsed as they stream."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field

from appliance.models.runtime import ToolCall, held_back

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parse_block(body: str, names: Collection[str]) -> ToolCall | None:
    """One block's call, or None when it is not a JSON object naming an offered tool with object arguments."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting past json's limit
        return None
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    # Some models write "parameters" (Llama 3.1's own format) where Qwen and Hermes write "arguments".
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(new_call_id(), value["name"], json.dumps(args, ensure_ascii=False))


@dataclass
class ToolCallParser:
    """Feed it generated text as it comes; it hands back ("content", text) and ("call", ToolCall) events.

    Text that could be the start of a `<tool_call>` block is held until it is known; a block is a call
    once its closing tag arrives. A block that does not parse as a call of an offered tool stays text
    (and is counted in `unparseable`): with constrained decoding that never happens. Whitespace-only
    text is held back too, and dropped at the end when the output was calls: it is their separator.
    """

    names: Collection[str]
    calls: list[ToolCall] = field(default_factory=list)
    unparseable: int = 0
    _buffer: str = ""
    _in_call: bool = False
    _blank: str = ""  # whitespace seen, not yet sent
    _sent_text: bool = False

    def feed(self, text: str) -> list[tuple[str, object]]:
        self._buffer += text
        events: list[tuple[str, object]] = []
        while self._buffer:
            if self._in_call:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    break
                body, self._buffer = self._buffer[:end], self._buffer[end + len(CLOSE) :]
                self._in_call = False
                call = parse_block(body.strip(), self.names)
                if call is None:
                    self.unparseable += 1
                    self._text(OPEN + body + CLOSE, events)
                else:
                    self._blank = ""
                    self.calls.append(call)
                    events.append(("call", call))
                continue
            start = self._buffer.find(OPEN)
            if start >= 0:
                self._text(self._buffer[:start], events)
                self._buffer = self._buffer[start + len(OPEN) :]
                self._in_call = True
                continue
            keep = held_back(self._buffer, (OPEN,))
            ready, self._buffer = (
                self._buffer[: len(self._buffer) - keep],
                self._buffer[len(self._buffer) - keep :],
            )
            self._text(ready, events)
            break
        return events

    def finish(self) -> list[tuple[str, object]]:
        """The rest: an unclosed block (cut off by max_tokens) is text, and counts as unparseable."""
        events: list[tuple[str, object]] = []
        if self._in_call:
            self.unparseable += 1
            self._text(OPEN + self._buffer, events)
        else:
            self._text(self._buffer, events)
        self._buffer, self._in_call = "", False
        if self._blank and not self.calls:
            events.append(("content", self._blank))
            self._sent_text = True
        self._blank = ""
        return events

    def _text(self, text: str, events: list) -> None:
        if not text:
            return
        if not text.strip():
            self._blank += text
            return
        events.append(("content", self._blank + text))
        self._blank = ""
        self._sent_text = True


def parse_output(text: str, names: Collection[str]) -> tuple[str | None, list[ToolCall], int]:
    """(content, calls, unparseable blocks) of a whole output; content None when it is only calls."""
    parser = ToolCallParser(names)
    parts = [v for kind, v in (*parser.feed(text), *parser.finish()) if kind == "content"]
    content = "".join(parts)  # type: ignore[arg-type]
    if parser.calls:
        # Text beside calls is the model's preamble ("Let me check."): its edges are layout.
        return content.strip() or None, parser.calls, parser.unparseable
    return content, parser.calls, parser.unparseable
