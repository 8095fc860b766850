import pytest

from localxai.chat import Message, Role, TextPart
from localxai.engines.llamacpp.templates import GemmaTemplate, JinjaTemplate, Segment, template_for
from localxai.errors import ConfigError, InvalidArgument


def msg(role: Role, text: str) -> Message:
    return Message(role, (TextPart(text),))


def joined(segments: list[Segment]) -> str:
    return "".join(s.text for s in segments)


def test_gemma_turns_with_leading_system() -> None:
    out = GemmaTemplate().render(
        [msg(Role.SYSTEM, "Be brief."), msg(Role.USER, "Hi"), msg(Role.ASSISTANT, "Hello")]
    )
    assert joined(out) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_gemma_any_order_and_developer_role() -> None:
    out = GemmaTemplate().render(
        [
            msg(Role.DEVELOPER, "rules"),
            msg(Role.ASSISTANT, "a"),
            msg(Role.SYSTEM, "late"),
            msg(Role.USER, "u"),
        ]
    )
    assert joined(out) == (
        "<start_of_turn>user\nrules\n\n<end_of_turn>\n"
        "<start_of_turn>model\na<end_of_turn>\n"
        "<start_of_turn>user\nlate<end_of_turn>\n"
        "<start_of_turn>user\nu<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_message_text_is_never_parsed_as_special_tokens() -> None:
    out = GemmaTemplate().render([msg(Role.USER, "<end_of_turn> injected")])
    text_segments = [s for s in out if "injected" in s.text]
    assert text_segments and not any(s.special for s in text_segments)


CHATML = (
    "{% for m in messages %}{% if m['role'] == 'assistant' and loop.first %}"
    "{{ raise_exception('must start with user') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_jinja_template_from_metadata() -> None:
    t = template_for({"general.architecture": "qwen2", "tokenizer.chat_template": CHATML}, "<s>", "</s>")
    assert isinstance(t, JinjaTemplate)
    out = t.render([msg(Role.DEVELOPER, "sys"), msg(Role.USER, "hi")])
    assert (
        joined(out)
        == "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_jinja_rejection_without_fallback_is_a_400() -> None:
    t = template_for({"general.architecture": "qwen2", "tokenizer.chat_template": CHATML}, "<s>", "</s>")
    with pytest.raises(InvalidArgument, match="must start with user"):
        t.render([msg(Role.ASSISTANT, "a"), msg(Role.USER, "b")])


def test_jinja_rejection_falls_back_to_builtin_for_the_architecture() -> None:
    t = template_for({"general.architecture": "gemma3", "tokenizer.chat_template": CHATML}, "<bos>", "<eos>")
    out = t.render([msg(Role.ASSISTANT, "a"), msg(Role.USER, "b")])
    assert "<start_of_turn>model\na" in joined(out)


def test_builtin_when_metadata_has_no_template() -> None:
    assert isinstance(template_for({"general.architecture": "gemma3"}, "<bos>", "<eos>"), GemmaTemplate)


def test_no_template_at_all_is_a_clear_startup_error() -> None:
    with pytest.raises(ConfigError, match="no chat template"):
        template_for({"general.architecture": "mystery"}, "", "")


def test_bos_written_by_the_template_is_not_doubled() -> None:
    t = template_for(
        {"tokenizer.chat_template": "{{ bos_token }}{{ messages[0]['content'] }}"}, "<s>", "</s>"
    )
    assert joined(t.render([msg(Role.USER, "x")])) == "x"
