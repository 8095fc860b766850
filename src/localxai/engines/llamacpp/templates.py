"""Chat templates: the GGUF's own Jinja template when it has one, else a built-in for the architecture.

Templates render to segments so that message text is tokenized without special-token parsing:
a user typing `<end_of_turn>` gets those characters, not a control token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from localxai.chat import Message, Role
from localxai.errors import ConfigError, InvalidArgument


@dataclass(frozen=True)
class Segment:
    text: str
    special: bool  # parse special tokens (template markup) or not (message text)


class ChatTemplate(Protocol):
    def render(self, messages: Sequence[Message]) -> list[Segment]: ...


def _role_name(role: Role) -> str:
    # REST clients send `developer` (OpenAI's newer name for system); templates know `system`.
    return "system" if role is Role.DEVELOPER else role.value


class GemmaTemplate:
    """Gemma's turn format, for any order of roles.

    Gemma has no system role: like Google's template, a leading system message is put in front of
    the first user turn; a system message later in the conversation becomes a user turn of its own.
    """

    def render(self, messages: Sequence[Message]) -> list[Segment]:
        segments: list[Segment] = []
        preamble = ""
        turns = list(messages)
        while turns and _role_name(turns[0].role) == "system":
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

    def render(self, messages: Sequence[Message]) -> list[Segment]:
        payload = [{"role": _role_name(m.role), "content": m.text} for m in messages]
        try:
            text = self._template.render(
                messages=payload, add_generation_prompt=True, bos_token=self._bos, eos_token=self._eos
            )
        except _TemplateRejected as exc:
            # The template refuses this conversation shape (e.g. strict alternation).
            if self._fallback is not None:
                return self._fallback.render(messages)
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
