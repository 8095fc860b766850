"""xai_api protobuf messages <-> core types. Pure functions, no I/O."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from xai_sdk.proto import chat_pb2, embed_pb2, files_pb2, image_pb2, models_pb2, sample_pb2, usage_pb2

from localxai import sealing
from localxai.agent import collections_search
from localxai.agent.attachment_search import attachment_settings
from localxai.agent.base import MAX_DOMAINS
from localxai.attachments import file_part
from localxai.chat import (
    CallStatus,
    ChatRequest,
    Choice,
    Completion,
    Detail,
    Event,
    Finished,
    FinishReason,
    FormatType,
    ImagePart,
    Message,
    ModelInfo,
    Part,
    ReasoningDelta,
    ResponseFormat,
    Role,
    Sampling,
    ServerCall,
    ServerCallEvent,
    ServerTool,
    StepDone,
    TextDelta,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolMode,
    Usage,
    UsageReport,
    inline_citations,
)
from localxai.embeddings import Embedded, EmbeddingModelInfo
from localxai.errors import InvalidArgument
from localxai.sealing import Sealer
from localxai.service import ChatStream
from localxai.store.files import FileRecord

ROLES = {
    chat_pb2.ROLE_USER: Role.USER,
    chat_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
    chat_pb2.ROLE_SYSTEM: Role.SYSTEM,
    chat_pb2.ROLE_FUNCTION: Role.FUNCTION,
    chat_pb2.ROLE_TOOL: Role.TOOL,
    chat_pb2.ROLE_DEVELOPER: Role.DEVELOPER,
}
DETAILS = {
    image_pb2.DETAIL_INVALID: Detail.AUTO,
    image_pb2.DETAIL_AUTO: Detail.AUTO,
    image_pb2.DETAIL_LOW: Detail.LOW,
    image_pb2.DETAIL_HIGH: Detail.HIGH,
}
FINISH_REASONS = {
    FinishReason.STOP: sample_pb2.REASON_STOP,
    FinishReason.LENGTH: sample_pb2.REASON_MAX_LEN,
    FinishReason.TOOL_CALLS: sample_pb2.REASON_TOOL_CALLS,
    FinishReason.TIME_LIMIT: sample_pb2.REASON_TIME_LIMIT,
    FinishReason.MAX_TURNS: sample_pb2.REASON_MAX_LEN,  # the proto has no reason of its own for it
}
TOOL_MODES = {
    chat_pb2.TOOL_MODE_AUTO: ToolMode.AUTO,
    chat_pb2.TOOL_MODE_NONE: ToolMode.NONE,
    chat_pb2.TOOL_MODE_REQUIRED: ToolMode.REQUIRED,
}
FORMATS = {
    chat_pb2.FORMAT_TYPE_INVALID: FormatType.TEXT,
    chat_pb2.FORMAT_TYPE_TEXT: FormatType.TEXT,
    chat_pb2.FORMAT_TYPE_JSON_OBJECT: FormatType.JSON_OBJECT,
    chat_pb2.FORMAT_TYPE_JSON_SCHEMA: FormatType.JSON_SCHEMA,
}
# A tool call's kind <-> ToolCall.type; a successful call's kind -> its usage entry; include options
# -> the kinds whose outputs a client asked for.
CALL_TYPES = {
    "function": chat_pb2.TOOL_CALL_TYPE_CLIENT_SIDE_TOOL,
    "web_search": chat_pb2.TOOL_CALL_TYPE_WEB_SEARCH_TOOL,
    "x_search": chat_pb2.TOOL_CALL_TYPE_X_SEARCH_TOOL,
    "code_execution": chat_pb2.TOOL_CALL_TYPE_CODE_EXECUTION_TOOL,
    "collections_search": chat_pb2.TOOL_CALL_TYPE_COLLECTIONS_SEARCH_TOOL,
    "mcp": chat_pb2.TOOL_CALL_TYPE_MCP_TOOL,
    "attachment_search": chat_pb2.TOOL_CALL_TYPE_ATTACHMENT_SEARCH_TOOL,
    "image_generation": chat_pb2.TOOL_CALL_TYPE_IMAGE_GENERATION_TOOL,
}
CALL_KINDS = {value: kind for kind, value in CALL_TYPES.items()}
USAGE_TOOLS = {
    "web_search": usage_pb2.SERVER_SIDE_TOOL_WEB_SEARCH,
    "x_search": usage_pb2.SERVER_SIDE_TOOL_X_SEARCH,
    "code_execution": usage_pb2.SERVER_SIDE_TOOL_CODE_EXECUTION,
    "collections_search": usage_pb2.SERVER_SIDE_TOOL_COLLECTIONS_SEARCH,
    "mcp": usage_pb2.SERVER_SIDE_TOOL_MCP,
    "attachment_search": usage_pb2.SERVER_SIDE_TOOL_ATTACHMENT_SEARCH,
    "image_generation": usage_pb2.SERVER_SIDE_TOOL_IMAGE_GENERATION,
}
INCLUDED_OUTPUTS = {
    chat_pb2.INCLUDE_OPTION_WEB_SEARCH_CALL_OUTPUT: "web_search",
    chat_pb2.INCLUDE_OPTION_X_SEARCH_CALL_OUTPUT: "x_search",
    chat_pb2.INCLUDE_OPTION_CODE_EXECUTION_CALL_OUTPUT: "code_execution",
    chat_pb2.INCLUDE_OPTION_COLLECTIONS_SEARCH_CALL_OUTPUT: "collections_search",
    chat_pb2.INCLUDE_OPTION_ATTACHMENT_SEARCH_CALL_OUTPUT: "attachment_search",
    chat_pb2.INCLUDE_OPTION_MCP_CALL_OUTPUT: "mcp",
}
CALL_STATUSES = {
    CallStatus.IN_PROGRESS: chat_pb2.TOOL_CALL_STATUS_IN_PROGRESS,
    CallStatus.COMPLETED: chat_pb2.TOOL_CALL_STATUS_COMPLETED,
    CallStatus.FAILED: chat_pb2.TOOL_CALL_STATUS_FAILED,
}
# Every named effort; the core then checks which ones the model accepts.
EFFORTS = {
    value: name.removeprefix("EFFORT_").lower()
    for name, value in chat_pb2.ReasoningEffort.items()
    if name != "INVALID_EFFORT"
}
MODALITIES = {"text": models_pb2.TEXT, "image": models_pb2.IMAGE}
T = TypeVar("T")


def _enum(mapping: Mapping[int, T], value: int, field: str) -> T:
    """Proto3 enums are open: an unknown number decodes fine and must be refused here, by name."""
    if value not in mapping:
        raise InvalidArgument(f"{field}: unknown enum value {value}.")
    return mapping[value]


def chat_request(
    req: chat_pb2.GetCompletionsRequest, stream: bool = False, sealer: Sealer | None = None
) -> ChatRequest:
    """`sealer` opens the sealed thinking (`encrypted_content`) of earlier answers sent back."""

    def optional(name: str):  # type: ignore[no-untyped-def]
        return getattr(req, name) if req.HasField(name) else None

    sampling = Sampling(
        temperature=1.0 if optional("temperature") is None else req.temperature,
        top_p=1.0 if optional("top_p") is None else req.top_p,
        max_tokens=optional("max_tokens"),
        stop=tuple(req.stop),
        seed=optional("seed"),
        presence_penalty=optional("presence_penalty") or 0.0,
        frequency_penalty=optional("frequency_penalty") or 0.0,
    )
    return ChatRequest(
        model=req.model,
        messages=messages(req.messages, sealer),
        sampling=sampling,
        n=req.n if req.HasField("n") else 1,
        stream=stream,
        include_usage=True,
        user=req.user or None,
        tools=tuple(_tool(t) for t in req.tools if _tool_kind(t) == "function"),
        tool_choice=_tool_choice(req),
        parallel_tool_calls=req.parallel_tool_calls if req.HasField("parallel_tool_calls") else True,
        response_format=_response_format(req),
        logprobs=req.logprobs,
        top_logprobs=optional("top_logprobs"),
        reasoning_effort=(
            _enum(EFFORTS, req.reasoning_effort, "reasoning_effort") if req.HasField("reasoning_effort") else None
        ),
        unsupported=_unsupported(req),
        server_tools=tuple(_server_tool(t) for t in req.tools if _tool_kind(t) != "function"),
        max_turns=optional("max_turns"),
    )


def _tool_kind(tool: chat_pb2.Tool) -> str:
    """`function`, or the server-side tool it names (the core refuses or drops those)."""
    kind = tool.WhichOneof("tool")
    if kind is None:
        raise InvalidArgument("tools: a tool must be a function or one of xAI's server-side tools.")
    return str(kind)


# The proto's oneof names -> the core's tool kinds (the same as the Responses API's).
SERVER_TOOL_KINDS = {"code_execution": "code_execution", "web_search": "web_search", "x_search": "x_search",
                     "mcp": "mcp", "collections_search": "collections_search",
                     "attachment_search": "attachment_search", "image_generation": "image_generation"}  # fmt: skip


def _server_tool(tool: chat_pb2.Tool) -> ServerTool:
    kind = _tool_kind(tool)
    config: dict[str, Any] = {}
    if kind == "web_search":
        w = tool.web_search
        if w.allowed_domains and w.excluded_domains:
            raise InvalidArgument("web_search: allowed_domains and excluded_domains cannot both be set.")
        for key, domains in (("allowed_domains", w.allowed_domains), ("excluded_domains", w.excluded_domains)):
            if len(domains) > MAX_DOMAINS:
                raise InvalidArgument(f"web_search: {key} takes at most {MAX_DOMAINS} domains, got {len(domains)}.")
            if domains:
                config[key] = list(domains)
        if w.enable_image_understanding or w.enable_image_search:
            raise InvalidArgument("web_search: image understanding in web search is not served by localxai.")
    elif kind == "mcp":
        m = tool.mcp
        config = {"server_url": m.server_url, "server_label": m.server_label,
                  "server_description": m.server_description, "headers": dict(m.extra_headers)}  # fmt: skip
        if m.allowed_tool_names:
            config["allowed_tools"] = list(m.allowed_tool_names)
        if m.HasField("authorization"):
            config["authorization"] = m.authorization
    elif kind == "collections_search":
        c = tool.collections_search
        mode = c.WhichOneof("retrieval_mode")
        raw = {"collection_ids": list(c.collection_ids), "limit": c.limit if c.HasField("limit") else None,
               "mode": mode.removesuffix("_retrieval") if mode else None}  # fmt: skip
        config = collections_search.settings(kind, raw, "tools.collections_search")
    elif kind == "attachment_search":
        limit = tool.attachment_search.limit if tool.attachment_search.HasField("limit") else None
        config = attachment_settings(limit, "tools.attachment_search")
    return ServerTool(SERVER_TOOL_KINDS.get(kind, kind), json.dumps(config))


def _tool(tool: chat_pb2.Tool) -> Tool:
    f = tool.function
    return Tool(
        name=f.name, description=f.description, parameters=f.parameters or '{"type": "object", "properties": {}}'
    )


def _tool_choice(req: chat_pb2.GetCompletionsRequest) -> ToolChoice | None:
    if not req.HasField("tool_choice"):
        return None
    if req.tool_choice.WhichOneof("tool_choice") == "function_name":
        return ToolChoice(ToolMode.FUNCTION, req.tool_choice.function_name)
    return ToolChoice(_enum(TOOL_MODES, req.tool_choice.mode, "tool_choice.mode"))


def _response_format(req: chat_pb2.GetCompletionsRequest) -> ResponseFormat:
    if not req.HasField("response_format"):
        return ResponseFormat()
    fmt = req.response_format
    kind = _enum(FORMATS, fmt.format_type, "response_format.format_type")
    return ResponseFormat(kind, fmt.schema if kind is FormatType.JSON_SCHEMA and fmt.HasField("schema") else None)


COMPACTED = "A summary of the earlier conversation:"  # as the Responses API hydrates a compaction item


def messages(given: Sequence[chat_pb2.Message], sealer: Sealer | None) -> tuple[Message, ...]:
    """The request's messages; from the last compaction on (`chat.compact()` leaves one message whose
    `encrypted_content` is the sealed summary): what came before is dropped and the summary stands for it."""
    out: list[Message] = []
    for index, m in enumerate(given):
        summary = sealer.open(m.encrypted_content, sealing.COMPACTION) if sealer and m.encrypted_content else None
        if summary is not None:
            out = [Message(Role.SYSTEM, (TextPart(f"{COMPACTED}\n{summary}"),))]
            continue
        if m.encrypted_content and not m.content and not m.tool_calls:
            continue  # only another server's blob (a compaction, say): nothing here can read it
        out.append(_message(index, m, sealer))
    return tuple(out)


def _message(index: int, m: chat_pb2.Message, sealer: Sealer | None) -> Message:
    if m.role == chat_pb2.INVALID_ROLE:
        raise InvalidArgument(f"messages[{index}]: a role is required.")
    role = _enum(ROLES, m.role, f"messages[{index}].role")
    parts: list[Part] = []
    for content in m.content:
        kind = content.WhichOneof("content")
        if kind == "text":
            parts.append(TextPart(content.text))
        elif kind == "image_url":
            detail = _enum(DETAILS, content.image_url.detail, f"messages[{index}].content.image_url.detail")
            parts.append(ImagePart(content.image_url.image_url, detail))
        elif kind == "file":
            f = content.file
            parts.append(file_part(f"messages[{index}].content.file", f.file_id, f.data, f.url, f.filename))
        else:
            raise InvalidArgument(f"messages[{index}]: content of type {kind} is not supported.")
    calls = tuple(
        ToolCall(c.id, c.function.name, c.function.arguments, CALL_KINDS.get(c.type, "function")) for c in m.tool_calls
    )
    return Message(
        role=role,
        content=tuple(parts),
        name=m.name or None,
        tool_calls=calls,
        tool_call_id=m.tool_call_id or None,
        reasoning=m.reasoning_content or _opened(m.encrypted_content, sealer),
    )


def _opened(blob: str, sealer: Sealer | None) -> str | None:
    """Our own sealed thinking; another server's blob is dropped, never an error (as over REST)."""
    return sealer.open(blob, sealing.REASONING) if blob and sealer is not None else None


def _unsupported(req: chat_pb2.GetCompletionsRequest) -> tuple[str, ...]:
    checks = {
        "search_parameters": req.HasField("search_parameters")
        and req.search_parameters.mode != chat_pb2.OFF_SEARCH_MODE,
        "agent_count": req.HasField("agent_count"),
        "guidelines": len(req.guidelines) > 0,
    }
    return tuple(name for name, is_set in checks.items() if is_set)


def embedding_model(info: EmbeddingModelInfo) -> models_pb2.EmbeddingModel:
    return models_pb2.EmbeddingModel(
        name=info.id,
        aliases=list(info.aliases),
        version="1.0.0",
        input_modalities=[MODALITIES["text"]],
        output_modalities=[models_pb2.EMBEDDING],
        created=timestamp(info.created),
        system_fingerprint=info.fingerprint,
    )


def embedded(done: Embedded, base64_vectors: bool) -> embed_pb2.EmbedResponse:
    def vector(row: np.ndarray) -> embed_pb2.FeatureVector:
        if base64_vectors:
            return embed_pb2.FeatureVector(base64_array=base64.b64encode(row.astype("<f4").tobytes()).decode())
        return embed_pb2.FeatureVector(float_array=row.tolist())

    return embed_pb2.EmbedResponse(
        id=str(uuid.uuid4()),
        embeddings=[embed_pb2.Embedding(index=i, embeddings=[vector(row)]) for i, row in enumerate(done.vectors)],
        usage=usage_pb2.EmbeddingUsage(num_text_embeddings=len(done.vectors)),
        model=done.model.id,
        system_fingerprint=done.model.fingerprint,
    )


def file(record: FileRecord) -> files_pb2.File:
    message = files_pb2.File(
        id=record.id, filename=record.filename, size=record.bytes, created_at=timestamp(int(record.created_at))
    )
    if record.expires_at is not None:
        message.expires_at.CopyFrom(timestamp(int(record.expires_at)))
    return message


def timestamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def usage(u: Usage) -> usage_pb2.SamplingUsage:
    return usage_pb2.SamplingUsage(
        completion_tokens=u.completion_tokens,
        reasoning_tokens=u.reasoning_tokens,
        prompt_tokens=u.prompt_tokens,
        total_tokens=u.total_tokens,
        prompt_text_tokens=u.text_tokens,
        cached_prompt_text_tokens=u.cached_tokens,
        prompt_image_tokens=u.image_tokens,
        num_sources_used=0,
        server_side_tools_used=[USAGE_TOOLS[kind] for kind in u.server_tools_used if kind in USAGE_TOOLS],
    )


def tool_calls(calls: tuple[ToolCall, ...]) -> list[chat_pb2.ToolCall]:
    return [tool_call(c) for c in calls]


def tool_call(c: ToolCall, ended: ServerCall | None = None) -> chat_pb2.ToolCall:
    """A call; a server-side one with its type and how it `ended`."""
    status = CALL_STATUSES[ended.status] if ended is not None else chat_pb2.TOOL_CALL_STATUS_COMPLETED
    call = chat_pb2.ToolCall(
        id=c.id, type=CALL_TYPES.get(c.kind, chat_pb2.TOOL_CALL_TYPE_CLIENT_SIDE_TOOL), status=status,
        function=chat_pb2.FunctionCall(name=c.name, arguments=c.arguments),
    )  # fmt: skip
    if ended is not None and ended.error is not None:
        call.error_message = ended.error
    return call


INLINE = "inline_citations"  # beside the tool kinds in what a request includes


def included(options: Iterable[int]) -> frozenset[str]:
    """The tool kinds whose outputs a request's `include` asks for, and INLINE for inline citations."""
    kinds = {INCLUDED_OUTPUTS[o] for o in options if o in INCLUDED_OUTPUTS}
    return frozenset({*kinds, INLINE} if chat_pb2.INCLUDE_OPTION_INLINE_CITATIONS in options else kinds)


def _inline(text: str, sources: Sequence[str]) -> list[chat_pb2.InlineCitation]:
    """Where the answer names its sources, numbered as xAI numbers them ("1", "2", ...)."""
    return [
        chat_pb2.InlineCitation(id=str(n), start_index=start, end_index=end, web_citation=chat_pb2.WebCitation(url=url))
        for n, (url, start, end) in enumerate(inline_citations(text, sources), 1)
    ]


def logprobs(entries: tuple[TokenLogprob, ...]) -> chat_pb2.LogProbs:
    return chat_pb2.LogProbs(
        content=[
            chat_pb2.LogProb(
                token=e.token,
                logprob=e.logprob,
                bytes=e.bytes,
                top_logprobs=[chat_pb2.TopLogProb(token=t.token, logprob=t.logprob, bytes=t.bytes) for t in e.top],
            )
            for e in entries
        ]
    )


def _output(choice: Choice, sealer: Sealer | None) -> chat_pb2.CompletionOutput:
    message = chat_pb2.CompletionMessage(
        content=choice.text,
        reasoning_content=choice.reasoning or "",
        role=chat_pb2.ROLE_ASSISTANT,
        tool_calls=tool_calls(choice.tool_calls),
        encrypted_content=_sealed(choice, sealer),
    )
    output = chat_pb2.CompletionOutput(
        finish_reason=FINISH_REASONS[choice.finish_reason], index=choice.index, message=message
    )
    if choice.logprobs is not None:
        output.logprobs.CopyFrom(logprobs(choice.logprobs))
    return output


def _sealed(choice: Choice, sealer: Sealer | None) -> str:
    """The choice's thinking sealed, when the client asked for it (`use_encrypted_content`)."""
    return sealer.seal(choice.reasoning, sealing.REASONING) if sealer is not None and choice.reasoning else ""


def completion(
    c: Completion, sealer: Sealer | None = None, include: Iterable[str] = ()
) -> chat_pb2.GetChatCompletionResponse:
    """The response; an agent loop's answer as the SDK reads it: each turn that called server-side tools
    as an assistant output with those calls, each result the client `include`s as a ROLE_TOOL output,
    then the answer, numbered in order."""
    if len(c.choices) == 1 and c.choices[0].steps:
        outputs = _loop_outputs(c.choices[0], sealer, frozenset(include))
    else:
        outputs = [_output(choice, sealer) for choice in c.choices]
    return chat_pb2.GetChatCompletionResponse(
        id=c.id,
        outputs=outputs,
        created=timestamp(c.created),
        model=c.model,
        system_fingerprint=c.fingerprint,
        usage=usage(c.usage),
        citations=[url for choice in c.choices for url in choice.citations],
    )


def _loop_outputs(choice: Choice, sealer: Sealer | None, include: frozenset[str]) -> list[chat_pb2.CompletionOutput]:
    ended = {call.call.id: call for call in choice.server_calls}
    outputs: list[chat_pb2.CompletionOutput] = []
    calls: dict[str, ToolCall] = {}
    for step in choice.steps:
        if step.role is Role.ASSISTANT:
            calls.update((c.id, c) for c in step.tool_calls)
            message = chat_pb2.CompletionMessage(
                content=step.text, reasoning_content=step.reasoning or "", role=chat_pb2.ROLE_ASSISTANT,
                tool_calls=[tool_call(c, ended.get(c.id)) for c in step.tool_calls],
            )  # fmt: skip
            finish = sample_pb2.REASON_TOOL_CALLS
        elif (call := calls.get(step.tool_call_id or "")) is not None and call.kind in include:
            message = chat_pb2.CompletionMessage(
                content=step.text, role=chat_pb2.ROLE_TOOL, tool_calls=[tool_call(call, ended.get(call.id))]
            )
            finish = sample_pb2.REASON_STOP
        else:
            continue
        outputs.append(chat_pb2.CompletionOutput(finish_reason=finish, index=len(outputs), message=message))
    last = _output(choice, sealer)
    last.index = len(outputs)
    if INLINE in include:
        last.message.citations.extend(_inline(choice.text, choice.citations))
    return [*outputs, last]


def language_model(info: ModelInfo) -> models_pb2.LanguageModel:
    return models_pb2.LanguageModel(
        name=info.id,
        aliases=list(info.aliases),
        version="1.0.0",
        input_modalities=[MODALITIES[m] for m in info.input_modalities],
        output_modalities=[MODALITIES[m] for m in info.output_modalities],
        created=timestamp(info.created),
        max_prompt_length=info.context_length,
        system_fingerprint=info.fingerprint,
    )


def _head(stream: ChatStream) -> dict[str, Any]:
    return {
        "id": stream.id,
        "created": timestamp(stream.created),
        "model": stream.model,
        "system_fingerprint": stream.fingerprint,
    }


def sealed_chunk(
    stream: ChatStream, choice: Choice, sealer: Sealer, index: int | None = None
) -> chat_pb2.GetChatCompletionChunk | None:
    """The chunk that carries a finished choice's sealed thinking, on output `index` (by default the
    choice's own; an agent loop's answer is on a later output). None: it did not think."""
    sealed = _sealed(choice, sealer)
    if not sealed:
        return None
    delta = chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT, encrypted_content=sealed)
    output = chat_pb2.CompletionOutputChunk(index=choice.index if index is None else index, delta=delta)
    return chat_pb2.GetChatCompletionChunk(**_head(stream), outputs=[output])


class Chunks:
    """A stream's events as chunks, numbered as `completion` numbers the outputs: an agent loop's turn that
    called server-side tools is an assistant output with those calls (each sent once, as it ended), the
    results the client `include`s follow as ROLE_TOOL outputs, and the answer goes on at the next index."""

    def __init__(self, stream: ChatStream, include: Iterable[str] = ()) -> None:
        self._stream = stream
        self._include = frozenset(include)
        self._offset = 0  # the output the answer so far is on
        self._ended: dict[str, ServerCall] = {}
        self._sources: list[str] = []
        self._answer: list[str] = []  # the text since the last turn that called tools: where citations point

    def __call__(self, event: Event) -> list[chat_pb2.GetChatCompletionChunk]:
        head = _head(self._stream)
        if isinstance(event, ServerCallEvent):
            call = event.call
            if call.status is CallStatus.IN_PROGRESS:
                return []
            self._ended[call.call.id] = call
            self._sources += [url for url in call.sources if url not in self._sources]
            delta = chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT, tool_calls=[tool_call(call.call, call)])
            return [_one(head, self._offset, delta)]
        if isinstance(event, StepDone):
            turn = chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT)
            chunks = [_one(head, self._offset, turn, sample_pb2.REASON_TOOL_CALLS)]
            index = self._offset + 1
            for message in event.messages:
                ended = self._ended.get(message.tool_call_id or "")
                if message.role is Role.TOOL and ended is not None and ended.call.kind in self._include:
                    delta = chat_pb2.Delta(role=chat_pb2.ROLE_TOOL, content=message.text,
                                           tool_calls=[tool_call(ended.call, ended)])  # fmt: skip
                    chunks.append(_one(head, index, delta, sample_pb2.REASON_STOP))
                    index += 1
            self._offset = index
            self._answer = []
            return chunks
        if isinstance(event, UsageReport):
            last = chat_pb2.GetChatCompletionChunk(**head, usage=usage(event.usage), citations=self._sources)
            inline = _inline("".join(self._answer), self._sources) if INLINE in self._include else []
            if not inline:
                return [last]
            return [_one(head, self._offset, chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT, citations=inline)), last]
        if isinstance(event, TextDelta):
            self._answer.append(event.text)
        return [chunk(self._stream, event, self.output(event.index))]

    def output(self, index: int) -> int:
        """The output a choice's next chunk goes on."""
        return self._offset + index


def _one(
    head: dict[str, Any], index: int, delta: chat_pb2.Delta, finish: int | None = None
) -> chat_pb2.GetChatCompletionChunk:
    output = chat_pb2.CompletionOutputChunk(index=index, delta=delta)
    if finish is not None:
        output.finish_reason = finish  # type: ignore[assignment]
    return chat_pb2.GetChatCompletionChunk(**head, outputs=[output])


def chunk(stream: ChatStream, event: Event, index: int | None = None) -> chat_pb2.GetChatCompletionChunk:
    """One stream event as a chunk (on output `index`, by default the event's own). Every output carries
    role ASSISTANT: the SDK drops text without it."""
    head = _head(stream)
    if isinstance(event, UsageReport):
        return chat_pb2.GetChatCompletionChunk(**head, usage=usage(event.usage))
    assert not isinstance(event, (ServerCallEvent, StepDone))
    delta = chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT)
    output = chat_pb2.CompletionOutputChunk(index=event.index if index is None else index)
    if isinstance(event, TextDelta):
        delta.content = event.text
        if event.logprobs:
            output.logprobs.CopyFrom(logprobs(event.logprobs))
    elif isinstance(event, ReasoningDelta):
        delta.reasoning_content = event.text
    elif isinstance(event, ToolCallDelta):
        delta.tool_calls.extend(tool_calls(event.calls))
    elif isinstance(event, Finished):
        output.finish_reason = FINISH_REASONS[event.reason]
    output.delta.CopyFrom(delta)
    return chat_pb2.GetChatCompletionChunk(**head, outputs=[output])
