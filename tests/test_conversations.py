"""The stored-conversation lifecycle in the core (conversations.py), once for both wires: continue ->
generate -> store the answer, the stream cut at shutdown, or the failure; the rules of a turn; the
compaction budget. Each wire's own tests check that it only translates (test_responses.py, test_grpc.py)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import pytest

from localxai.auth import ApiKey
from localxai.chat import (
    ChatRequest,
    Event,
    Finished,
    FinishReason,
    Message,
    Role,
    TextDelta,
    TextPart,
    ToolCall,
    Usage,
    UsageReport,
)
from localxai.conversations import COMPACT_MAX_TOKENS, Conversations, Turn
from localxai.engines.base import GenerationRequest
from localxai.engines.fake import FakeEngine
from localxai.errors import InvalidArgument, NotFound, Unavailable
from localxai.service import ChatService
from localxai.store.store import Store, sqlite_url

CALLER = ApiKey("key-1", "xai-...0001", "test", 0, 0)
OTHER = ApiKey("key-2", "xai-...0002", "other", 0, 0)
USAGE = Usage(prompt_tokens=3, completion_tokens=2)


class Scripted(FakeEngine):
    """Plays the events (or raises the exception) it is given, and records what it was asked."""

    def __init__(self, script: Sequence[Event | Exception], context_length: int = 4096) -> None:
        super().__init__(context_length=context_length)
        self.script = list(script)
        self.asked: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        self.asked.append(request)

        async def play() -> AsyncGenerator[Event, None]:
            for item in self.script:
                if isinstance(item, Exception):
                    raise item
                yield item

        return play()


def conversations(engine: FakeEngine) -> Conversations:
    store = Store(sqlite_url(Path(tempfile.mkdtemp(prefix="localxai-test-"))))
    return Conversations(store, ChatService([engine]))


def turn(text: str = "hi", **fields: object) -> Turn:
    request = ChatRequest(model="fake-model", messages=(Message(Role.USER, (TextPart(text),)),))
    return Turn(request, **fields)  # type: ignore[arg-type]


ANSWER = [TextDelta(0, "so "), TextDelta(0, "far"), Finished(0, FinishReason.STOP), UsageReport(USAGE)]


async def test_a_finished_turn_is_stored_before_its_stream_ends_and_continues_with_its_answer() -> None:
    engine = Scripted(ANSWER)
    core = conversations(engine)
    running = await core.stream(turn(instructions="Be brief."), CALLER)
    assert running.response.completion.choices == ()  # no answer yet
    events = [event async for event in running.stream.events]
    assert events == ANSWER
    stored = await core.get(running.response.id, CALLER)
    assert stored == running.response and stored.completion.choices[0].text == "so far"
    assert stored.completion.usage == USAGE and stored.id == running.stream.id
    await core.complete(turn("and then?", previous_id=stored.id), CALLER)
    roles = [(m.role, m.text) for m in engine.asked[-1].chat.messages]
    asked = [(Role.SYSTEM, "Be brief."), (Role.USER, "hi"), (Role.ASSISTANT, "so far"), (Role.USER, "and then?")]
    assert roles == asked
    with pytest.raises(NotFound):
        await core.get(stored.id, OTHER)  # another key's response does not exist for it


async def test_a_stream_cut_at_shutdown_is_stored_as_far_as_it_arrived() -> None:
    """At shutdown the core ends a stream with Finished(length) and no usage: stored, zero usage."""
    core = conversations(Scripted([TextDelta(0, "so far"), Finished(0, FinishReason.LENGTH)]))
    stored = await core.complete(turn(), CALLER)
    assert (await core.get(stored.id, CALLER)).completion.choices[0].finish_reason is FinishReason.LENGTH
    assert stored.completion.usage == Usage() and stored.completion.choices[0].text == "so far"


async def test_a_stream_that_fails_after_it_started_is_stored_as_failed_with_a_public_message() -> None:
    for error, message in ((Unavailable("The engine went away."), "The engine went away."), (KeyError("x"), None)):
        core = conversations(Scripted([TextDelta(0, "so"), error]))
        running = await core.stream(turn(), CALLER)
        with pytest.raises(type(error)):
            async for _ in running.stream.events:
                pass
        stored = await core.get(running.response.id, CALLER)
        assert stored.error == (message or "internal error")  # never the exception's own text
        assert stored.completion.choices == ()


async def test_a_client_that_goes_away_stores_nothing() -> None:
    core = conversations(Scripted(ANSWER))
    running = await core.stream(turn(), CALLER)
    assert await anext(running.stream.events) == ANSWER[0]
    await running.stream.events.aclose()
    with pytest.raises(NotFound):
        await core.get(running.response.id, CALLER)


async def test_store_false_is_answered_and_never_kept() -> None:
    core = conversations(Scripted(ANSWER))
    stored = await core.complete(turn(store=False), CALLER)
    assert stored.completion.choices[0].text == "so far"
    with pytest.raises(NotFound):
        await core.get(stored.id, CALLER)


async def test_the_rules_of_a_turn_are_the_cores_for_both_wires() -> None:
    core = conversations(Scripted(ANSWER))
    first = await core.complete(turn(), CALLER)
    with pytest.raises(InvalidArgument, match="instructions cannot be combined with previous_response_id"):
        await core.stream(turn(instructions="x", previous_id=first.id), CALLER)
    many = turn()
    many = Turn(ChatRequest(model="fake-model", messages=many.request.messages, n=2))
    with pytest.raises(InvalidArgument, match="n must be 1 when it is stored"):
        await core.stream(many, CALLER)
    orphan = Message(Role.TOOL, (TextPart("18C"),), tool_call_id="call_1")
    with pytest.raises(InvalidArgument, match="No function call with call_id 'call_1' precedes its output"):
        await core.stream(Turn(ChatRequest(model="fake-model", messages=(orphan,))), CALLER)
    answered = Message(Role.ASSISTANT, (), tool_calls=(ToolCall("call_1", "f", "{}"),))
    await core.complete(Turn(ChatRequest(model="fake-model", messages=(answered, orphan))), CALLER)
    with pytest.raises(NotFound):
        await core.stream(turn(previous_id="not-an-id"), CALLER)


async def test_compaction_asks_for_a_summary_within_a_quarter_of_the_context() -> None:
    for context_length, budget in ((1024, 256), (65536, COMPACT_MAX_TOKENS)):
        engine = Scripted(ANSWER, context_length=context_length)
        core = conversations(engine)
        context = await core.context(turn(), CALLER)
        summary = await core.compact(context, CALLER)
        assert summary.choices[0].text == "so far"
        [asked] = engine.asked
        assert asked.chat.sampling.max_tokens == budget and asked.chat.sampling.temperature == 0
        assert asked.chat.messages[:-1] == context.messages and asked.chat.messages[-1].role is Role.USER
