"""Background responses (`background: true` on /v1/responses) through a real server with the real model,
with the OpenAI SDK as its background mode uses them: create, poll with retrieve, cancel, and the event
stream resumed with `starting_after`; on SQLite and PostgreSQL (where a second server replays and follows
a run of the first), and across a kill -9 and a restart."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from localxai.chat import Progress, StoredResponse
from localxai.store.background import ResponseRuns
from localxai.store.store import Store

from conftest import API_KEY, Server, private_database, start_server, stop_server

OTHER_KEY = "xai-background-other-key-00"
MODEL = "gemma-3-270m"
# Greedy, this prompt makes the small model count on and on: a run that lasts until it is cancelled.
ENDLESS: dict[str, Any] = {"input": "Count from 1 to 20.", "temperature": 0, "max_output_tokens": 1500}
SHORT: dict[str, Any] = {"input": "Say hello.", "temperature": 0, "max_output_tokens": 12}
LIVE = ("queued", "in_progress")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def servers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """One server on SQLite; two sharing one PostgreSQL database (either may run a response)."""
    tmp = tmp_path_factory.mktemp(f"background-{request.param}")
    with private_database(request.param, tmp) as url:
        args = ("--api-key", API_KEY, "--api-key", OTHER_KEY, "--ctx-size", "2048", "--database-url", url)
        started = [start_server(tmp, *args) for _ in range(1 if request.param == "sqlite" else 2)]
        yield started
        for server in started:
            stop_server(server)


def sdk(server: Server, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=key, timeout=120, max_retries=0)


def wait(client: openai.OpenAI, response_id: str, until: tuple[str, ...] = LIVE, timeout: float = 180) -> Any:
    """Poll until the status is no longer one of `until`."""
    deadline = time.monotonic() + timeout
    while (response := client.responses.retrieve(response_id)).status in until:
        assert time.monotonic() < deadline, response.status
        time.sleep(0.2)
    return response


def test_create_poll_and_continue(servers: list[Server]) -> None:
    client = sdk(servers[0])
    created = client.responses.create(model=MODEL, background=True, **SHORT)
    assert created.status in LIVE and created.background and created.output == []
    done = wait(client, created.id)
    assert done.status in ("completed", "incomplete") and done.background
    assert done.output_text and done.usage is not None and done.usage.output_tokens >= 1
    assert done.id == created.id and done.completed_at is not None
    # A background response is a stored one: a conversation goes on from it, in the background or not.
    follow = client.responses.create(model=MODEL, previous_response_id=done.id, input="Again.", max_output_tokens=5)
    assert follow.previous_response_id == done.id and follow.background is False
    items = client.responses.input_items.list(follow.id, order="asc").data
    assert any(getattr(i, "role", None) == "assistant" for i in items)


def test_stream_resumed_after_any_event_is_the_same_stream(servers: list[Server]) -> None:
    client = sdk(servers[0])
    events, response_id = [], ""
    with client.responses.create(model=MODEL, background=True, stream=True, **SHORT) as stream:
        for event in stream:
            events.append(event)
            if event.type == "response.created":
                response_id = event.response.id
                assert event.response.status == "queued" and event.response.background
            if len(events) == 6:
                break  # the connection drops
    assert [e.sequence_number for e in events] == list(range(6))
    assert [e.type for e in events[:3]] == ["response.created", "response.queued", "response.in_progress"]
    # Another server (PostgreSQL) or the same one resumes it after the last event seen.
    rest = list(sdk(servers[-1]).responses.retrieve(response_id, stream=True, starting_after=5))
    assert [e.sequence_number for e in rest] == list(range(6, 6 + len(rest)))
    assert rest[-1].type in ("response.completed", "response.incomplete")
    # A replay from the start is the same events, numbered the same.
    replay = list(client.responses.retrieve(response_id, stream=True))
    assert [e.model_dump() for e in replay] == [e.model_dump() for e in [*events, *rest]]
    text = "".join(e.delta for e in replay if e.type == "response.output_text.delta")
    assert text == client.responses.retrieve(response_id).output_text == rest[-1].response.output_text


def test_a_stream_follows_a_run_of_another_server(servers: list[Server]) -> None:
    first, last = sdk(servers[0]), sdk(servers[-1])
    created = first.responses.create(model=MODEL, background=True, **SHORT)
    followed = list(last.responses.retrieve(created.id, stream=True))  # from queued to the end, as it runs
    assert followed[0].type == "response.created" and followed[-1].type in ("response.completed", "response.incomplete")
    assert followed[-1].response.output_text == first.responses.retrieve(created.id).output_text


def test_cancel_a_running_response(servers: list[Server]) -> None:
    client = sdk(servers[0])
    response_id = ""
    with client.responses.create(model=MODEL, background=True, stream=True, **ENDLESS) as stream:
        for event in stream:
            if event.type == "response.created":
                response_id = event.response.id
            if event.type == "response.output_text.delta":
                break  # it is writing
    cancelled = client.responses.cancel(response_id)
    assert cancelled.status == "cancelled"
    assert client.responses.cancel(response_id).status == "cancelled"  # again: the same answer
    assert sdk(servers[-1]).responses.retrieve(response_id).status == "cancelled"
    # What it wrote before the cancel is kept (the run stores it as it stops, here at once, on another
    # server at its next lease renewal), and its stream ends with the cancel.
    deadline = time.monotonic() + 30
    while not (final := client.responses.retrieve(response_id)).output:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert final.status == "cancelled" and final.output_text
    events = list(client.responses.retrieve(response_id, stream=True))
    assert events[-1].type == "response.cancelled" and events[-1].response["status"] == "cancelled"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text


def test_cancel_a_queued_response_and_a_finished_one(servers: list[Server]) -> None:
    client = sdk(servers[0])
    # Fill every worker slot of every server with endless runs, then queue one more.
    running = [client.responses.create(model=MODEL, background=True, **ENDLESS).id for _ in range(4 * len(servers))]
    try:
        queued = client.responses.create(model=MODEL, background=True, **SHORT)
        assert client.responses.retrieve(queued.id).status == "queued"
        with pytest.raises(openai.BadRequestError) as refused:  # it has no answer to continue from yet
            client.responses.create(model=MODEL, previous_response_id=queued.id, **SHORT)
        assert "still running" in str(refused.value.body)
        cancelled = client.responses.cancel(queued.id)
        assert cancelled.status == "cancelled" and cancelled.output == []
        events = list(client.responses.retrieve(queued.id, stream=True))
        assert [e.type for e in events] == ["response.created", "response.queued", "response.cancelled"]
    finally:
        for response_id in running:
            client.responses.cancel(response_id)
    finished = client.responses.create(model=MODEL, background=True, **SHORT)
    done = wait(client, finished.id)
    assert client.responses.cancel(finished.id).status == done.status  # ended: answered as it is


def test_bad_input_and_other_keys(servers: list[Server]) -> None:
    server = servers[0]
    client = sdk(server)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, background=True, store=False, **SHORT)
    assert "store=true" in str(refused.value.body)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", background=True, **SHORT)  # checked before it is queued
    plain = client.responses.create(model=MODEL, **SHORT)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.cancel(plain.id)
    assert "background: true" in str(refused.value.body)
    created = client.responses.create(model=MODEL, background=True, **SHORT)
    other = sdk(server, OTHER_KEY)
    for call in (
        lambda: other.responses.retrieve(created.id),
        lambda: other.responses.cancel(created.id),
        lambda: list(other.responses.retrieve(created.id, stream=True)),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for query, needle in (
        ("stream=maybe", "stream"),
        ("stream=true&starting_after=x", "starting_after"),
        ("stream=true&starting_after=-4", "starting_after"),
    ):
        r = httpx.get(f"{server.v1}/responses/{created.id}?{query}", headers=headers)
        assert r.status_code == 400 and needle in r.json()["error"], r.text
    r = httpx.get(f"{server.v1}/responses/{plain.id}?stream=true", headers=headers)
    assert r.status_code == 400 and "background" in r.json()["error"]
    r = httpx.post(f"{server.v1}/responses/not-an-id/cancel", headers=headers)
    assert r.status_code == 404
    wait(client, created.id)


def test_background_responses_survive_kill_9_and_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    args = ("--database-url", f"sqlite:///{db}", "--ctx-size", "2048", "--parallel", "2")
    server = start_server(tmp_path, *args)
    try:
        client = sdk(server, "x")
        long = client.responses.create(model=MODEL, background=True, **{**ENDLESS, "max_output_tokens": 120})
        wait(client, long.id, until=("queued",))
        deadline = time.monotonic() + 60
        while not _logged(db, long.id):  # it has streamed some events
            assert time.monotonic() < deadline
            time.sleep(0.1)
        short = [client.responses.create(model=MODEL, background=True, **SHORT).id for _ in range(5)]
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=30)
        server = start_server(tmp_path, *args)
        client = sdk(server, "x")
        for response_id in (long.id, *short):
            done = wait(client, response_id)
            assert done.status in ("completed", "incomplete") and done.output_text, done
        # The cut run was run again from the start: its stream is the new run's, whole and in order.
        events = list(client.responses.retrieve(long.id, stream=True))
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert events[-1].response.output_text == client.responses.retrieve(long.id).output_text
    finally:
        if server.process.poll() is None:
            stop_server(server)


def _logged(db: Path, response_id: str) -> bool:
    with sqlite3.connect(db) as conn:
        return (
            conn.execute("SELECT 1 FROM response_events WHERE response_id = ?", (response_id,)).fetchone() is not None
        )


# -- the store: who writes the final response ----------------------------------------------------------


def _queued(store: Store, response_id: str) -> ResponseRuns:
    from localxai import codec
    from localxai.chat import ChatRequest, Completion, Usage

    rows = ResponseRuns(store)
    nothing = Completion(response_id, 1, "m", "fp", (), Usage())
    body = StoredResponse(response_id, 1, ChatRequest(model="m", messages=()), nothing, background=True,
                          progress=Progress.QUEUED)  # fmt: skip
    rows.queue(response_id, "k", codec.dumps(body), "{}", time.time())
    return rows


def test_a_run_and_a_cancel_settle_a_response_once(db_url: str) -> None:
    store = Store(db_url)
    rows = _queued(store, "11111111-1111-4111-8111-111111111111")
    assert rows.state("11111111-1111-4111-8111-111111111111").status == "pending"  # type: ignore[union-attr]
    claim = store.claim_deferred("w", 60)
    assert claim is not None and claim.endpoint == "/v1/responses"
    assert store.take_deferred(claim.id, "k", 0) is None  # not a deferred completion
    assert rows.cancel(claim.id, time.time()) == "running"
    assert rows.cancel(claim.id, time.time()) is None  # once
    assert not rows.finish(claim.id, "{}", "done", time.time())  # the run lost: it was cancelled
    # A finished run wins over a later cancel.
    rows = _queued(store, "22222222-2222-4222-8222-222222222222")
    claim = store.claim_deferred("w", 60)
    assert claim is not None
    assert rows.finish(claim.id, "final", "done", time.time())
    assert rows.cancel(claim.id, time.time()) is None
    assert store.load_response(claim.id, "k", 0) == "final"
    # Deleting a response takes its run and its events with it.
    rows.append(claim.id, 1, 0, "[]")
    assert rows.events(claim.id, None)
    assert store.delete_response(claim.id, "k")
    assert not rows.events(claim.id, None) and rows.state(claim.id) is None
    store.close()
