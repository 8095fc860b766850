"""The batch store on both databases: counts from the queue's rows, expiry, and batch rows kept apart
from deferred completions."""

from __future__ import annotations

import time

import pytest

from localxai import errors as e
from localxai.store.batches import BatchRecord, BatchRows, Counts, NewRequest
from localxai.store.store import Store


def batch(batch_id: str, created: float, owner: str = "k") -> BatchRecord:
    return BatchRecord(batch_id, owner, "b", None, created, created + 100, None, None, Counts())


def requests(*names: str) -> list[NewRequest]:
    return [NewRequest(f"00000000-0000-4000-8000-{i:012d}{n}"[:36], n, "/v1/chat/completions", "m", "{}")
            for i, n in enumerate(names)]  # fmt: skip


def test_counts_follow_the_rows_and_expiry_cancels_what_is_pending(db_url: str) -> None:
    store = Store(db_url)
    rows = BatchRows(store)
    now = time.time()
    rows.create(batch("batch_a", now))
    rows.add("batch_a", "k", requests("x", "y", "z"), now)
    claimed = store.claim_deferred("w", 60, batch=True)
    assert claimed is not None
    store.finish_deferred(claimed[0], "{}")
    assert store.claim_deferred("w", 60) is None  # a batch's rows are not deferred completions
    got = rows.get("batch_a", "k")
    assert got is not None and got.counts == Counts(requests=3, pending=2, success=1)
    assert rows.get("batch_a", "other") is None
    with pytest.raises(e.NotFound):
        rows.add("batch_a", "other", requests("w"), now)
    # Past its window the batch's pending requests are cancelled; past retention it is gone.
    assert rows.expire(now + 101, retention_s=1000) == (1, 0)
    expired = rows.get("batch_a", "k")
    assert expired is not None and expired.cancel_message and expired.counts.cancelled == 2
    with pytest.raises(e.InvalidArgument):
        rows.add("batch_a", "k", requests("late"), now)
    assert rows.expire(now + 2000, retention_s=1000) == (0, 1)
    assert rows.get("batch_a", "k") is None
    store.close()


def test_pages_of_batches_are_newest_first_and_tokens_are_checked(db_url: str) -> None:
    store = Store(db_url)
    rows = BatchRows(store)
    for i in range(5):
        rows.create(batch(f"batch_{i}", 1000.0 + i))
    page, more = rows.page("k", 2, None)
    assert [b.id for b in page] == ["batch_4", "batch_3"] and more
    page, more = rows.page("k", 10, "batch_3")
    assert [b.id for b in page] == ["batch_2", "batch_1", "batch_0"] and not more
    with pytest.raises(e.InvalidArgument):
        rows.page("other", 2, "batch_3")  # another key's batch is no token
    store.close()
