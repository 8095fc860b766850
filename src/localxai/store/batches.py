"""Batches in the shared database: a row per batch, its requests rows of the deferred queue.

A batch's requests are claimed, leased and settled by the same worker as deferred completions
(deferred.py), so a batch is as durable as they are. Its counts are read from those rows in the same
query as the batch, never kept beside them: they cannot drift. Adding requests takes the batch's row
lock (PostgreSQL) or the database's write lock (SQLite) and numbers them after the last one, which is the
order they run in and are listed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from localxai import errors as e
from localxai.store.store import Store
from localxai.store.tables import batches, deferred

STATES = {"pending": "pending", "running": "pending", "done": "succeeded", "failed": "failed", "cancelled": "cancelled"}
_ROWS_BY_STATE = {
    "pending": ("pending", "running"),
    "succeeded": ("done",),
    "failed": ("failed",),
    "cancelled": ("cancelled",),
}
_LOOKUP = 500  # ids per IN (...) query


@dataclass(frozen=True)
class Counts:
    requests: int = 0
    pending: int = 0
    success: int = 0
    error: int = 0
    cancelled: int = 0


@dataclass(frozen=True)
class BatchRecord:
    id: str
    owner: str
    name: str
    input_file_id: str | None
    created_at: float
    expires_at: float
    cancelled_at: float | None
    cancel_message: str | None
    counts: Counts


@dataclass(frozen=True)
class NewRequest:
    """A request to add: `request` is its admitted payload, or None with the error that refused it
    (recorded failed, so only that request fails)."""

    id: str
    batch_request_id: str
    endpoint: str
    model: str
    request: str | None
    error_kind: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class RequestRow:
    ordinal: int
    batch_request_id: str
    endpoint: str
    model: str
    state: str  # pending | succeeded | failed | cancelled
    created_at: float
    finished_at: float | None
    request: str | None
    result: str | None
    error_kind: str | None
    error_message: str | None


class BatchRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, batch: BatchRecord, requests: Sequence[NewRequest] = ()) -> None:
        with self._store._write() as conn:
            conn.execute(
                batches.insert().values(
                    id=batch.id,
                    owner=batch.owner,
                    name=batch.name,
                    input_file_id=batch.input_file_id,
                    created_at=batch.created_at,
                    expires_at=batch.expires_at,
                )
            )
            _insert(conn, batch.id, batch.owner, requests, batch.created_at, 0)

    def get(self, batch_id: str, owner: str) -> BatchRecord | None:
        with self._store._read() as conn:
            row = conn.execute(sa.select(batches).where(batches.c.id == batch_id, batches.c.owner == owner)).first()
            return None if row is None else _records(conn, [row._mapping])[0]

    def page(self, owner: str, limit: int, after: str | None) -> tuple[list[BatchRecord], bool]:
        """The owner's batches, newest first, after the batch `after` (a page token); and whether more follow."""
        query = sa.select(batches).where(batches.c.owner == owner)
        with self._store._read() as conn:
            if after is not None:
                last = conn.execute(
                    sa.select(batches.c.created_at).where(batches.c.id == after, batches.c.owner == owner)
                ).scalar()
                if last is None:
                    raise e.InvalidArgument(f"Invalid pagination token {after[:64]!r}.")
                query = query.where(sa.tuple_(batches.c.created_at, batches.c.id) < sa.tuple_(last, after))
            rows = conn.execute(query.order_by(batches.c.created_at.desc(), batches.c.id.desc()).limit(limit + 1))
            found = [r._mapping for r in rows]
            return _records(conn, found[:limit]), len(found) > limit

    def add(self, batch_id: str, owner: str, requests: Sequence[NewRequest], now: float) -> None:
        """Append `requests` to the batch, all or none: raises NotFound for another key's or an unknown
        batch, InvalidArgument for a batch that takes no more (cancelled, expired, made from a file) or a
        request id it already holds."""
        with self._store._write() as conn:
            query = sa.select(batches).where(batches.c.id == batch_id, batches.c.owner == owner)
            if self._store.dialect == "postgresql":
                query = query.with_for_update()
            batch = conn.execute(query).first()
            if batch is None:
                raise e.NotFound(f"Cannot find batch with ID {batch_id}")
            if batch.cancelled_at is not None:
                raise e.InvalidArgument(f"Batch {batch_id} is cancelled; no requests can be added.")
            if batch.expires_at <= now:
                raise e.InvalidArgument(f"Batch {batch_id} has expired; no requests can be added.")
            if batch.input_file_id is not None:
                raise e.InvalidArgument(
                    f"Batch {batch_id} was created from the file {batch.input_file_id}; no requests can be added."
                )
            ids = [r.batch_request_id for r in requests]
            for start in range(0, len(ids), _LOOKUP):
                taken = conn.scalar(
                    sa.select(deferred.c.batch_request_id)
                    .where(
                        deferred.c.batch_id == batch_id, deferred.c.batch_request_id.in_(ids[start : start + _LOOKUP])
                    )
                    .limit(1)
                )
                if taken is not None:
                    raise e.InvalidArgument(f"Batch {batch_id} already has a request with batch_request_id {taken!r}.")
            last = conn.scalar(sa.select(sa.func.max(deferred.c.ordinal)).where(deferred.c.batch_id == batch_id))
            _insert(conn, batch_id, owner, requests, now, (last or 0))

    def cancel(self, batch_id: str, owner: str, now: float, message: str | None = None) -> BatchRecord | None:
        """Cancel the batch's pending and running requests (the worker drops its running ones when it
        renews their lease); None for an unknown batch. Raises InvalidArgument when it is cancelled already."""
        with self._store._write() as conn:
            query = sa.select(batches).where(batches.c.id == batch_id, batches.c.owner == owner)
            if self._store.dialect == "postgresql":
                query = query.with_for_update()
            if (row := conn.execute(query).first()) is None:
                return None
            if row.cancelled_at is not None:
                raise e.InvalidArgument(f"Batch {batch_id} is already cancelled.")
            _cancel(conn, [batch_id], now)
            conn.execute(
                batches.update().where(batches.c.id == batch_id).values(cancelled_at=now, cancel_message=message)
            )
            row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).first()
            assert row is not None
            return _records(conn, [row._mapping])[0]

    def requests(
        self, batch_id: str, owner: str, limit: int, after: int, states: Iterable[str] = (), finished: bool = False
    ) -> tuple[list[RequestRow], bool] | None:
        """The batch's requests after ordinal `after`, in order, of the given states (all when none; with
        `finished` only those that have ended); None for an unknown batch."""
        with self._store._read() as conn:
            if conn.scalar(sa.select(batches.c.id).where(batches.c.id == batch_id, batches.c.owner == owner)) is None:
                return None
            wanted = [row for state in states for row in _ROWS_BY_STATE[state]]
            if finished:
                wanted = [s for s in (wanted or STATES) if s not in ("pending", "running")]
            query = sa.select(deferred).where(deferred.c.batch_id == batch_id, deferred.c.ordinal > after)
            if wanted:
                query = query.where(deferred.c.status.in_(wanted))
            rows = [_request(r._mapping) for r in conn.execute(query.order_by(deferred.c.ordinal).limit(limit + 1))]
            return rows[:limit], len(rows) > limit

    def request(self, batch_id: str, owner: str, batch_request_id: str) -> RequestRow | None:
        with self._store._read() as conn:
            row = conn.execute(
                sa.select(deferred).where(
                    deferred.c.batch_id == batch_id,
                    deferred.c.owner == owner,
                    deferred.c.batch_request_id == batch_request_id,
                )
            ).first()
            return None if row is None else _request(row._mapping)

    def expire(self, now: float, retention_s: float) -> tuple[int, int]:
        """Cancel what expired batches still have pending, and delete batches (with their requests)
        created more than `retention_s` ago; returns (batches cancelled, batches deleted)."""
        with self._store._write() as conn:
            due = list(
                conn.scalars(
                    sa.select(batches.c.id).where(batches.c.expires_at <= now, batches.c.cancelled_at.is_(None))
                )
            )
            if due:
                _cancel(conn, due, now)
                conn.execute(
                    batches.update()
                    .where(batches.c.id.in_(due))
                    .values(cancelled_at=now, cancel_message="The batch expired before all of its requests ran.")
                )
            old = list(conn.scalars(sa.select(batches.c.id).where(batches.c.created_at < now - retention_s)))
            for start in range(0, len(old), _LOOKUP):
                chunk = old[start : start + _LOOKUP]
                conn.execute(deferred.delete().where(deferred.c.batch_id.in_(chunk)))
                conn.execute(batches.delete().where(batches.c.id.in_(chunk)))
            return len(due), len(old)


def _insert(
    conn: sa.Connection, batch_id: str, owner: str, requests: Sequence[NewRequest], now: float, last: int
) -> None:
    if not requests:
        return
    rows = [
        {
            "id": r.id,
            "owner": owner,
            "status": "pending" if r.request is not None else "failed",
            "request": r.request or "",
            "error_kind": r.error_kind,
            "error_message": r.error_message,
            "created_at": now,
            "updated_at": now,
            "finished_at": None if r.request is not None else now,
            "batch_id": batch_id,
            "batch_request_id": r.batch_request_id,
            "ordinal": last + i + 1,
            "endpoint": r.endpoint,
            "model": r.model,
            "attempts": 0,
        }
        for i, r in enumerate(requests)
    ]
    conn.execute(deferred.insert(), rows)


def _cancel(conn: sa.Connection, batch_ids: list[str], now: float) -> None:
    conn.execute(
        deferred.update()
        .where(deferred.c.batch_id.in_(batch_ids), deferred.c.status.in_(("pending", "running")))
        .values(status="cancelled", claimed_by=None, lease_until=None, updated_at=now, finished_at=now)
    )


def _records(conn: sa.Connection, rows: list[sa.RowMapping]) -> list[BatchRecord]:
    """The batches with their counts, from their requests' rows in the same transaction."""
    ids = [r["id"] for r in rows]
    tally: dict[str, dict[str, int]] = {i: {} for i in ids}
    if ids:
        counted = conn.execute(
            sa.select(deferred.c.batch_id, deferred.c.status, sa.func.count())
            .where(deferred.c.batch_id.in_(ids))
            .group_by(deferred.c.batch_id, deferred.c.status)
        )
        for batch_id, status, n in counted:
            by_state = tally[batch_id]
            by_state[STATES[status]] = by_state.get(STATES[status], 0) + n
    return [
        BatchRecord(
            id=r["id"],
            owner=r["owner"],
            name=r["name"],
            input_file_id=r["input_file_id"],
            created_at=r["created_at"],
            expires_at=r["expires_at"],
            cancelled_at=r["cancelled_at"],
            cancel_message=r["cancel_message"],
            counts=Counts(
                requests=sum(tally[r["id"]].values()),
                pending=tally[r["id"]].get("pending", 0),
                success=tally[r["id"]].get("succeeded", 0),
                error=tally[r["id"]].get("failed", 0),
                cancelled=tally[r["id"]].get("cancelled", 0),
            ),
        )
        for r in rows
    ]


def _request(row: sa.RowMapping) -> RequestRow:
    return RequestRow(
        ordinal=row["ordinal"],
        batch_request_id=row["batch_request_id"],
        endpoint=row["endpoint"],
        model=row["model"],
        state=STATES[row["status"]],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        request=row["request"] or None,
        result=row["result"],
        error_kind=row["error_kind"],
        error_message=row["error_message"],
    )
