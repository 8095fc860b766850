"""The store on SQLite and PostgreSQL: migrations, keys, rate windows, deferred claims, usage."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from localxai.store.migrations import MIGRATIONS, migrate
from localxai.store.store import Store, key_hash


def test_migrations_from_empty_and_idempotent(db_url: str) -> None:
    store = Store(db_url)  # migrates from empty
    assert migrate(store.engine) == []  # nothing left to do
    with store.engine.connect() as conn:
        versions = list(conn.scalars(sa.text("SELECT version FROM schema_migrations ORDER BY version")))
    assert versions == [v for v, _, _ in MIGRATIONS]
    Store(db_url).close()  # a second process opening the same database
    store.close()


def test_concurrent_migrations(db_url: str) -> None:
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            Store(db_url).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_keys_are_hashed_listed_and_revoked(db_url: str) -> None:
    store = Store(db_url)
    record, secret = store.create_key("ci", models=("gemma-3-270m",), rpm=5, tpm=100)
    assert secret.startswith("xai-") and len(secret) > 40
    assert record.redacted == f"{secret[:4]}...{secret[-4:]}"
    with store.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT key_hash FROM api_keys")).scalar()
    assert stored == key_hash(secret) and secret not in str(stored)
    found = store.key_by_hash(key_hash(secret))
    assert found is not None and found.models == ("gemma-3-270m",) and found.rpm == 5
    assert [k.id for k in store.list_keys()] == [record.id]
    assert store.set_key_disabled(record.id, True)
    assert store.key_by_hash(key_hash(secret)).disabled  # type: ignore[union-attr]
    assert store.revoke_key(record.id)
    assert store.key_by_hash(key_hash(secret)) is None
    assert not store.has_active_keys() and not store.revoke_key(record.id)


def test_rate_window_admits_exactly_the_limit_under_a_race(db_url: str) -> None:
    store = Store(db_url)
    window = int(time.time() // 60)
    results: list[bool] = []
    lock = threading.Lock()

    def hit() -> None:
        allowed = store.reserve_request("key_a", window, rpm=7, tpm=None)
        with lock:
            results.append(allowed)

    threads = [threading.Thread(target=hit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 7
    assert store.reserve_request("key_a", window + 1, rpm=7, tpm=None)  # a new minute


def test_token_limit(db_url: str) -> None:
    store = Store(db_url)
    window = int(time.time() // 60)
    assert store.reserve_request("k", window, rpm=None, tpm=50)
    store.add_tokens("k", window, 60)
    assert not store.reserve_request("k", window, rpm=None, tpm=50)


def test_deferred_claims_leases_and_single_take(db_url: str) -> None:
    store = Store(db_url)
    store.create_deferred("r1", "owner", '{"x": 1}')
    store.create_deferred("r2", "owner", '{"x": 2}')
    assert store.claim_deferred("w1", lease_s=60) == ("r1", '{"x": 1}', None)
    assert store.claim_deferred("w2", lease_s=0.0) == ("r2", '{"x": 2}', None)
    assert store.claim_deferred("w1", lease_s=60) == ("r2", '{"x": 2}', None)  # w2's lease ran out
    assert store.claim_deferred("w3", lease_s=60) is None
    assert store.take_deferred("r1", "owner", not_before=0).status == "running"  # type: ignore[union-attr]
    assert store.take_deferred("r1", "someone-else", not_before=0) is None
    store.finish_deferred("r1", "RESULT")
    taken = store.take_deferred("r1", "owner", not_before=0)
    assert taken is not None and taken.result == "RESULT"
    assert store.take_deferred("r1", "owner", not_before=0) is None  # exactly once
    assert store.release_claims("w1") == 1  # r2 goes back to the queue
    assert store.claim_deferred("w3", lease_s=60) == ("r2", '{"x": 2}', None)
    store.fail_deferred("r2", "INVALID_ARGUMENT", "bad")
    failed = store.take_deferred("r2", "owner", not_before=0)
    assert failed is not None and (failed.error_kind, failed.error_message) == ("INVALID_ARGUMENT", "bad")
    store.create_deferred("old", "owner", "{}")
    assert store.take_deferred("old", "owner", not_before=time.time() + 1) is None  # expired


def test_usage_summary(db_url: str) -> None:
    store = Store(db_url)
    for key, completion in (("a", 5), ("a", 7), ("b", 1)):
        store.record_usage(
            key_id=key,
            model="m",
            api="rest",
            prompt_tokens=10,
            cached_tokens=4,
            image_tokens=0,
            completion_tokens=completion,
            reasoning_tokens=2,
            latency_ms=100.0,
        )
    store.record_usage(key_id="a", model="m", api="tools", prompt_tokens=0, cached_tokens=0, image_tokens=0,
                       completion_tokens=0, reasoning_tokens=0, latency_ms=0.0, server_tool_calls=3)  # fmt: skip
    rows = {r.key_id: r for r in store.usage_summary()}
    assert rows["a"].requests == 2 and rows["a"].completion_tokens == 12 and rows["a"].cached_tokens == 8
    assert rows["a"].server_tool_calls == 3 and rows["a"].mean_latency_ms == 100.0  # the tools row is no request
    assert rows["b"].server_tool_calls == 0
    assert [r.key_id for r in store.usage_summary(key_id="b")] == ["b"]
    assert store.usage_summary(since=time.time() + 60) == []


def test_stored_responses_expire_and_belong_to_their_owner(db_url: str) -> None:
    store = Store(db_url)
    store.save_response("r1", "key_a", '{"x": 1}', created_at=1000.0)
    store.save_response("r2", "key_a", '{"x": 2}', created_at=5000.0)
    assert store.load_response("r2", "key_a", not_before=2000.0) == '{"x": 2}'
    assert store.load_response("r2", "key_b", not_before=2000.0) is None  # another key's: not found
    assert store.load_response("r1", "key_a", not_before=2000.0) is None  # expired: gone, and deleted
    assert store.load_response("r1", "key_a", not_before=0.0) is None
    assert not store.delete_response("r2", "key_b") and store.delete_response("r2", "key_a")
    store.save_response("r3", "key_a", "{}", created_at=1000.0)
    assert store.expire_responses(not_before=2000.0) == 1


def test_server_secrets_are_made_once_and_shared(db_url: str) -> None:
    first, second = Store(db_url), Store(db_url)
    key = first.secret("sealed-blobs")
    assert len(key) == 32 and second.secret("sealed-blobs") == key and first.secret("other") != key
