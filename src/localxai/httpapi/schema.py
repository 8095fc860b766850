"""Pydantic models of xAI's REST request bodies: types only.

A value of the wrong type is a 422 (like xAI's JSON deserialisation); a well-typed value out of
range is the core's business (400). Strict mode: no silent coercion of "1" into 1.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON can spell them (\ud800); UTF-8 cannot


class WireModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class RequestBody(WireModel):
    """A whole request body: every string in it (keys too) must be valid Unicode."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        path = _lone_surrogate(data)
        if path is not None:
            raise PydanticCustomError(
                "invalid_unicode", "{path} is not valid Unicode (it contains a lone UTF-16 surrogate)", {"path": path}
            )
        return data


def _lone_surrogate(data: Any) -> str | None:
    """Where the first string with a lone surrogate is (iterative: any depth), or None."""
    stack: list[tuple[Any, str]] = [(data, "body")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if LONE_SURROGATE.search(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and LONE_SURROGATE.search(key):
                    return f"{path} (a key)"
                stack.append((item, f"{path}.{key}"))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
    return None


class TextContent(WireModel):
    type: Literal["text"]
    text: str


class ImageUrl(WireModel):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageContent(WireModel):
    type: Literal["image_url"]
    image_url: ImageUrl


class FileRef(WireModel):
    file_id: str | None = None
    url: str | None = None
    file_data: str | None = None  # base64, or a data URL (as OpenAI's SDKs send it)
    filename: str | None = None


class FileContent(WireModel):
    type: Literal["file"]
    file: FileRef


ContentPart = Annotated[TextContent | ImageContent | FileContent, Field(discriminator="type")]


class FunctionCall(WireModel):
    name: str
    arguments: str


class ToolCallWire(WireModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(WireModel):
    role: Literal["system", "user", "assistant", "tool", "function", "developer"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCallWire] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None  # alias some clients use


class FunctionDefinition(WireModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # accepted; localxai always enforces required calls by grammar


class ToolDefinition(WireModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(WireModel):
    name: str


class NamedToolChoice(WireModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(WireModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(WireModel):
    type: Literal["text"]


class JsonObjectFormat(WireModel):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(WireModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormatWire = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")]


class StreamOptions(WireModel):
    include_usage: bool


class ChatCompletionRequest(RequestBody):
    """POST /v1/chat/completions (xai-api-spec §1)."""

    model: str
    messages: list[ChatMessage]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: ResponseFormatWire | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    deferred: bool | None = None
    search_parameters: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None


class TokenizeRequest(RequestBody):
    """POST /v1/tokenize-text."""

    text: str
    model: str
    user: str | None = None
