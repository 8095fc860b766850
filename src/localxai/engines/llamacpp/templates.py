"""Chat templates: the GGUF's own Jinja template when it has one, else a built-in for the architecture.

Templates render to segments so that message text is tokenized without special-token parsing:
a user typing `<end_of_turn>` gets those characters, not a control token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from localxai.chat import Message, Role, TextPart, Tool, ToolChoice, ToolMode
from localxai.engines import openai_format, toolcalls
from localxai.engines.openai_format import role_name
from localxai.errors import ConfigError, InvalidArgument


@dataclass(frozen=True)
class Segment:
    text: str
    special: bool  # parse special tokens (template markup) or not (message text)


@dataclass(frozen=True)
class Conversation:
    """What a template renders: the messages, plus the tools offered and the reasoning effort."""

    messages: Sequence[Message]
    tools: Sequence[Tool] = ()
    tool_choice: ToolChoice = field(default_factory=lambda: ToolChoice(ToolMode.NONE))
    reasoning_effort: str | None = None

    @property
    def offered_tools(self) -> Sequence[Tool]:
        return self.tools if self.tool_choice.mode is not ToolMode.NONE else ()


class ChatTemplate(Protocol):
    def render(self, conversation: Conversation) -> list[Segment]: ...


def tools_as_text(conversation: Conversation) -> list[Message]:
    """For templates without tool support: the tools become system text, and earlier calls and
    their results become ordinary turns written in localxai's calling convention."""
    out: list[Message] = []
    for m in conversation.messages:
        if m.role is Role.ASSISTANT and m.tool_calls:
            out.append(Message(Role.ASSISTANT, (TextPart(toolcalls.history_text(m.tool_calls)),)))
        elif m.role in (Role.TOOL, Role.FUNCTION):
            label = f"Result of call {m.tool_call_id}" if m.tool_call_id else "Function result"
            out.append(Message(Role.USER, (TextPart(f"{label}: {m.text}"),)))
        else:
            out.append(m)
    if conversation.offered_tools:
        text = toolcalls.preamble(conversation.offered_tools, conversation.tool_choice)
        out.insert(0, Message(Role.SYSTEM, (TextPart(text),)))
    return out


class GemmaTemplate:
    """Gemma's turn format, for any order of roles.

    Gemma has no system role: like Google's template, a leading system message is put in front of
    the first user turn; a system message later in the conversation becomes a user turn of its own.
    """

    def render(self, conversation: Conversation) -> list[Segment]:
        segments: list[Segment] = []
        preamble = ""
        turns = tools_as_text(conversation)
        while turns and role_name(turns[0].role) == "system":
            preamble += turns.pop(0).text + "\n\n"
        if preamble and not (turns and turns[0].role is Role.USER):
            turns.insert(0, Message(Role.USER, ()))
        for message in turns:
            role = "model" if message.role is Role.ASSISTANT else "user"
            segments.append(Segment(f"<start_of_turn>{role}\n", special=True))
            text = message.text
            if preamble:
                text, preamble = preamble + text, ""
            segments.append(Segment(text, special=False))
            segments.append(Segment("<end_of_turn>\n", special=True))
        segments.append(Segment("<start_of_turn>model\n", special=True))
        return segments


BUILT_IN: Mapping[str, Callable[[], ChatTemplate]] = {"gemma3": GemmaTemplate, "gemma2": GemmaTemplate}


class _TemplateRejected(Exception):
    pass


def _raise(message: str) -> None:
    raise _TemplateRejected(message)


class JinjaTemplate:
    """A Hugging Face style Jinja chat template, as stored in GGUF `tokenizer.chat_template`."""

    def __init__(self, source: str, bos_token: str, eos_token: str, fallback: ChatTemplate | None) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ConfigError(f"the model's chat template does not compile: {exc}") from None
        self._bos = bos_token
        self._eos = eos_token
        self._fallback = fallback
        self._native_tools = "tools" in source  # the template renders tool definitions itself

    def render(self, conversation: Conversation) -> list[Segment]:
        tools = conversation.offered_tools
        extra: dict[str, object] = {}
        if conversation.reasoning_effort is not None:
            extra["reasoning_effort"] = conversation.reasoning_effort
            extra["enable_thinking"] = conversation.reasoning_effort != "none"
        if self._native_tools:
            payload = [openai_format.message(m, parsed_arguments=True) for m in conversation.messages]
            if tools:
                extra["tools"] = [openai_format.tool_definition(t) for t in tools]
        else:
            payload = [{"role": role_name(m.role), "content": m.text} for m in tools_as_text(conversation)]
        try:
            text = self._template.render(
                messages=payload, add_generation_prompt=True, bos_token=self._bos, eos_token=self._eos, **extra
            )
        except _TemplateRejected as exc:
            # The template refuses this conversation shape (e.g. strict alternation).
            if self._fallback is not None:
                return self._fallback.render(conversation)
            raise InvalidArgument(f"This model's chat template rejects the conversation: {exc}") from None
        except TemplateError as exc:
            raise InvalidArgument(f"This model's chat template failed on the conversation: {exc}") from None
        # The tokenizer adds BOS itself; a template that writes it too would double it.
        if self._bos and text.startswith(self._bos):
            text = text[len(self._bos) :]
        return [Segment(text, special=True)]


def template_for(metadata: Mapping[str, str], bos_token: str, eos_token: str) -> ChatTemplate:
    arch = metadata.get("general.architecture", "")
    builtin = BUILT_IN[arch]() if arch in BUILT_IN else None
    source = metadata.get("tokenizer.chat_template")
    if source:
        return JinjaTemplate(source, bos_token, eos_token, fallback=builtin)
    if builtin is not None:
        return builtin
    raise ConfigError(
        f"the model has no chat template in its GGUF metadata and localxai has no built-in template "
        f"for architecture {arch!r}; use a GGUF that carries tokenizer.chat_template"
    )
