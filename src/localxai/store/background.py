"""Background responses in the shared database (background.py): the response row, its run as a row of
the deferred queue (endpoint /v1/responses, no batch), and the log of the events each run produced.

The queue row decides the outcome: a run stores its final response only if it settles the row while the
row is still running, and a cancel only while the row is pending or running, so exactly one of them
writes the final response, whichever comes first and in whichever process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from localxai.store.store import Store
from localxai.store.tables import deferred, response_events, responses

ENDPOINT = "/v1/responses"


@dataclass(frozen=True)
class RunState:
    status: str  # pending | running | done | failed | cancelled (the queue row's)
    error_message: str | None


@dataclass(frozen=True)
class EventChunk:
    run: int
    chunk: int
    events: str  # a JSON list of core events (codec)


class ResponseRuns:
    def __init__(self, store: Store) -> None:
        self._store = store

    def queue(self, response_id: str, owner: str, body: str, payload: str, now: float) -> None:
        """The queued response and its queue row, in one transaction."""
        with self._store._write() as conn:
            conn.execute(responses.insert().values(id=response_id, owner=owner, body=body, created_at=now))
            row = {"id": response_id, "owner": owner, "status": "pending", "request": payload, "created_at": now,
                   "updated_at": now, "endpoint": ENDPOINT, "attempts": 0}  # fmt: skip
            conn.execute(deferred.insert().values(**row))

    def state(self, response_id: str) -> RunState | None:
        """The run's state; None once its queue row is gone (it expired after its end)."""
        query = sa.select(deferred.c.status, deferred.c.error_message).where(
            deferred.c.id == response_id, deferred.c.endpoint == ENDPOINT, deferred.c.batch_id.is_(None)
        )
        with self._store._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else RunState(row.status, row.error_message)

    def cancel(self, response_id: str, now: float) -> str | None:
        """Cancel the run if it has not ended; returns the status it had (pending or running), else None."""
        live = sa.and_(
            deferred.c.id == response_id, deferred.c.endpoint == ENDPOINT, deferred.c.status.in_(("pending", "running"))
        )
        with self._store._write() as conn:
            status = conn.scalar(sa.select(deferred.c.status).where(live))
            if status is None:
                return None
            conn.execute(
                deferred.update()
                .where(live)
                .values(status="cancelled", claimed_by=None, lease_until=None, updated_at=now, finished_at=now)
            )
            return str(status)

    def finish(self, response_id: str, body: str, status: str, now: float, error: str | None = None) -> bool:
        """Settle a running run (done or failed) and store its final response, in one transaction; False
        when the run is no longer running (it was cancelled: the final response is the cancel's)."""
        with self._store._write() as conn:
            ended = {"status": status, "error_message": error, "claimed_by": None, "lease_until": None,
                     "updated_at": now, "finished_at": now}  # fmt: skip
            running = sa.and_(deferred.c.id == response_id, deferred.c.status == "running")
            settled = conn.execute(deferred.update().where(running).values(**ended))
            if settled.rowcount != 1:
                return False
            conn.execute(responses.update().where(responses.c.id == response_id).values(body=body))
            return True

    def store_cancelled(self, response_id: str, body: str) -> None:
        """The final response of a cancelled run (written by the canceller or the run it stopped)."""
        cancelled = sa.select(deferred.c.id).where(deferred.c.id == response_id, deferred.c.status == "cancelled")
        with self._store._write() as conn:
            conn.execute(responses.update().where(responses.c.id == response_id, responses.c.id.in_(cancelled))
                         .values(body=body))  # fmt: skip

    def start_run(self, response_id: str, run: int) -> None:
        """A run begins: the events of earlier runs are dropped (a re-run starts its stream anew)."""
        with self._store._write() as conn:
            earlier = sa.and_(response_events.c.response_id == response_id, response_events.c.run != run)
            conn.execute(response_events.delete().where(earlier))

    def append(self, response_id: str, run: int, chunk: int, events: str) -> None:
        with self._store._write() as conn:
            conn.execute(response_events.insert().values(response_id=response_id, run=run, chunk=chunk, events=events))

    def events(self, response_id: str, after: tuple[int, int] | None) -> Sequence[EventChunk]:
        """The logged chunks after the cursor (run, chunk), in order."""
        query = sa.select(response_events.c.run, response_events.c.chunk, response_events.c.events).where(
            response_events.c.response_id == response_id
        )
        if after is not None:
            query = query.where(sa.tuple_(response_events.c.run, response_events.c.chunk) > sa.tuple_(*after))
        with self._store._read() as conn:
            rows = conn.execute(query.order_by(response_events.c.run, response_events.c.chunk))
            return [EventChunk(r.run, r.chunk, r.events) for r in rows]
