"""Shapes one choice's generated text into events: reasoning split, tool calls, plain text.

Used by engines that generate raw text (the embedded engine, the fake engine). Text arrives already
cut at stop strings; this decides what kind of text it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from localxai.chat import (
    Event,
    Finished,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    Tool,
    ToolCallDelta,
    ToolChoice,
    ToolMode,
)
from localxai.engines import toolcalls
from localxai.specs import ReasoningSpec


class ChoiceOutput:
    def __init__(
        self,
        index: int,
        tools: Sequence[Tool] = (),
        choice: ToolChoice | None = None,
        reasoning: ReasoningSpec | None = None,
    ) -> None:
        self.index = index
        self._tools = tuple(tools)
        mode = choice.mode if choice else ToolMode.NONE
        self._calls_possible = bool(tools) and mode is not ToolMode.NONE
        self._calls_forced = mode in (ToolMode.REQUIRED, ToolMode.FUNCTION)
        self._reasoning = reasoning
        self._thinking = bool(reasoning and reasoning.starts_thinking)
        self._opening = bool(reasoning and not reasoning.starts_thinking)  # may still see the start tag
        self._held = ""  # text that may be a delimiter, or the start of a tool call
        self._buffering = self._calls_forced
        self._buffered = ""
        self._undecided = self._calls_possible and not self._calls_forced
        self._logprobs: list[TokenLogprob] = []

    @property
    def thinking(self) -> bool:
        """True while the model is inside its reasoning (for token accounting)."""
        return self._thinking

    def feed(self, text: str, logprob: TokenLogprob | None = None) -> list[Event]:
        if logprob is not None:
            self._logprobs.append(logprob)
        return self._route(self._held + text, final=False)

    def finish(self, reason: FinishReason) -> list[Event]:
        held, self._held = self._held, ""
        events = self._route(held, final=True) if held else []
        if self._buffering:
            text, self._buffered = self._buffered, ""
            calls = toolcalls.parse(text, self._tools)
            # A forced call that the budget closed is still a whole call (engines/llamacpp/budget.py).
            ended = reason is FinishReason.STOP or (reason is FinishReason.LENGTH and self._calls_forced)
            if calls is not None and ended:
                events.append(ToolCallDelta(self.index, calls))
                reason = FinishReason.TOOL_CALLS
            elif text and not self._calls_forced:  # a forced call cut short is not text: no wrapper leaks
                events.append(self._text(text))
        if self._logprobs:
            events.append(self._text(""))
        events.append(Finished(self.index, reason))
        return events

    # -- routing ----------------------------------------------------------------------------------

    def _route(self, text: str, final: bool) -> list[Event]:
        events: list[Event] = []
        if self._opening:
            spec = self._reasoning
            assert spec is not None
            stripped = text.lstrip()
            if stripped.startswith(spec.start):
                self._opening, self._thinking = False, True
                text = stripped[len(spec.start) :]
            elif spec.start.startswith(stripped) and not final:
                self._held = text  # could still become the start tag
                return events
            else:
                self._opening = False
        if self._thinking:
            spec = self._reasoning
            assert spec is not None
            cut = text.find(spec.end)
            if cut < 0:
                keep = 0 if final else _partial_suffix(text, spec.end)
                self._held = text[len(text) - keep :]
                thought = text[: len(text) - keep]
                if thought:
                    events.append(ReasoningDelta(self.index, thought))
                return events
            if cut:
                events.append(ReasoningDelta(self.index, text[:cut]))
            self._thinking = False
            text = text[cut + len(spec.end) :].lstrip()
        self._held = ""
        return events + self._answer(text, final)

    def _answer(self, text: str, final: bool) -> list[Event]:
        if self._undecided:
            stripped = text.lstrip()
            if not stripped and not final:
                self._held = text
                return []
            # A reply that opens like a call is held back until the end decides.
            self._undecided = False
            self._buffering = stripped.startswith(("{", "<tool_call>", "<"))
        if self._buffering:
            self._buffered += text
            return []
        return [self._text(text)] if text or self._logprobs else []

    def _text(self, text: str) -> TextDelta:
        logprobs, self._logprobs = tuple(self._logprobs), []
        return TextDelta(self.index, text, logprobs)


def _partial_suffix(text: str, tag: str) -> int:
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0
