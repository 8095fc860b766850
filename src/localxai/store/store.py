"""Store: every read and write of persistent state, as methods named by intent.

Methods block (database I/O): call them off the event loop (`asyncio.to_thread`). Over 400 lines: one
method per intent for every stored resource (keys, usage, deferred requests, responses, secrets), all
through the same `_read`/`_write` error translation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from localxai.errors import ConfigError, InternalError, Unavailable
from localxai.store.migrations import migrate
from localxai.store.tables import api_keys, deferred, rate_windows, response_events, responses, server_secrets, usage

log = logging.getLogger(__name__)

KEY_PREFIX = "xai-"
# The database's own errors, translated where they enter: connection trouble is the server's
# temporary state (503), anything else a bug (500); neither shows SQL to a client.
UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, sa.exc.DisconnectionError)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except UNAVAILABLE as exc:
        log.warning("database unavailable: %s", getattr(exc, "orig", None) or exc)
        raise Unavailable("The database is unavailable; try again shortly.") from exc
    except sa.exc.SQLAlchemyError as exc:
        log.error("database error", exc_info=exc)
        raise InternalError() from exc


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def redact(secret: str) -> str:
    return f"{secret[:4]}...{secret[-4:]}" if len(secret) > 8 else "***"


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    redacted: str
    models: tuple[str, ...] | None  # None: every model
    rpm: int | None
    tpm: int | None
    disabled: bool
    created_at: float
    modified_at: float
    revoked_at: float | None
    tools: tuple[str, ...] | None = None  # server-side tool kinds it may use; None: every one served


@dataclass(frozen=True)
class DeferredRow:
    id: str
    owner: str
    status: str
    request: str
    result: str | None
    error_kind: str | None
    error_message: str | None
    created_at: float


TOOLS_API = "tools"  # the ledger's api for the row that counts a tool loop's server-side calls


class Claim(NamedTuple):
    """A request the worker claimed: its id, its stored payload, and its endpoint (None: a deferred completion)."""

    id: str
    request: str
    endpoint: str | None


@dataclass(frozen=True)
class UsageRow:
    key_id: str
    model: str
    requests: int
    prompt_tokens: int
    cached_tokens: int
    image_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    mean_latency_ms: float
    server_tool_calls: int = 0


def sqlite_url(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / 'localxai.db'}"


class Store:
    def __init__(self, url: str) -> None:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        except (sa.exc.ArgumentError, ModuleNotFoundError) as exc:
            raise ConfigError(f"unusable --database-url: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            _sqlite_setup(self.engine)
        try:
            migrate(self.engine)
        except sa.exc.OperationalError as exc:
            raise ConfigError(f"cannot open the database: {exc.orig}") from None

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with _translated(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """One transaction."""
        with _translated(), self.engine.begin() as conn:
            yield conn

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        try:
            with self._read() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except (Unavailable, InternalError):
            return False

    # -- API keys -----------------------------------------------------------------------------

    def create_key(
        self,
        name: str,
        models: tuple[str, ...] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        tools: tuple[str, ...] | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key; the secret is returned once and only its hash is stored."""
        secret = KEY_PREFIX + secrets.token_urlsafe(42)
        now = time.time()
        row = {
            "id": "key_" + secrets.token_hex(8),
            "name": name,
            "key_hash": key_hash(secret),
            "redacted": redact(secret),
            "models": None if models is None else json.dumps(list(models)),
            "tools": None if tools is None else json.dumps(list(tools)),
            "rpm": rpm,
            "tpm": tpm,
            "disabled": False,
            "created_at": now,
            "modified_at": now,
            "revoked_at": None,
        }
        with self._write() as conn:
            conn.execute(api_keys.insert().values(**row))
        return _key(row), secret

    def list_keys(self, include_revoked: bool = False) -> list[KeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self._read() as conn:
            return [_key(r._mapping) for r in conn.execute(query)]

    def key_by_hash(self, digest: str) -> KeyRecord | None:
        query = sa.select(api_keys).where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
        with self._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else _key(row._mapping)

    def has_active_keys(self) -> bool:
        query = sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
        with self._read() as conn:
            return bool(conn.scalar(query))

    def revoke_key(self, key_id: str) -> bool:
        now = time.time()
        update = (
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now, modified_at=now)
        )
        with self._write() as conn:
            return conn.execute(update).rowcount == 1

    def set_key_disabled(self, key_id: str, disabled: bool) -> bool:
        update = api_keys.update().where(api_keys.c.id == key_id).values(disabled=disabled, modified_at=time.time())
        with self._write() as conn:
            return conn.execute(update).rowcount == 1

    # -- rate limits --------------------------------------------------------------------------

    def reserve_request(self, key_id: str, window: int, rpm: int | None, tpm: int | None) -> bool:
        """Count one request in the key's minute window, atomically, unless a limit is reached.

        One conditional UPDATE: correct with many threads and many processes on one database.
        """
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(rate_windows)
        conditions = [rate_windows.c.key_id == key_id, rate_windows.c.window == window]
        if rpm is not None:
            conditions.append(rate_windows.c.requests < rpm)
        if tpm is not None:
            conditions.append(rate_windows.c.tokens < tpm)
        with self._write() as conn:
            conn.execute(insert.values(key_id=key_id, window=window, requests=0, tokens=0).on_conflict_do_nothing())
            update = rate_windows.update().where(*conditions).values(requests=rate_windows.c.requests + 1)
            return conn.execute(update).rowcount == 1

    def add_tokens(self, key_id: str, window: int, tokens: int) -> None:
        update = (
            rate_windows.update()
            .where(rate_windows.c.key_id == key_id, rate_windows.c.window == window)
            .values(tokens=rate_windows.c.tokens + tokens)
        )
        with self._write() as conn:
            conn.execute(update)
            conn.execute(rate_windows.delete().where(rate_windows.c.window < window - 60))  # keep an hour

    # -- usage ledger -------------------------------------------------------------------------

    def record_usage(self, **row: Any) -> None:
        with self._write() as conn:
            conn.execute(usage.insert().values(created_at=time.time(), **row))

    def usage_summary(self, key_id: str | None = None, since: float | None = None) -> list[UsageRow]:
        c = usage.c
        turn = c.api != TOOLS_API  # a row of model tokens; the others count a tool loop's server-side calls
        query = sa.select(
            c.key_id,
            c.model,
            sa.func.count(sa.case((turn, 1))),
            sa.func.sum(c.prompt_tokens),
            sa.func.sum(c.cached_tokens),
            sa.func.sum(c.image_tokens),
            sa.func.sum(c.completion_tokens),
            sa.func.sum(c.reasoning_tokens),
            sa.func.avg(sa.case((turn, c.latency_ms))),
            sa.func.sum(c.server_tool_calls),
        ).group_by(c.key_id, c.model)
        if key_id is not None:
            query = query.where(c.key_id == key_id)
        if since is not None:
            query = query.where(c.created_at >= since)
        with self._read() as conn:
            rows = conn.execute(query.order_by(c.key_id, c.model)).all()
        return [
            UsageRow(
                key_id=r[0],
                model=r[1],
                requests=int(r[2]),
                prompt_tokens=int(r[3] or 0),
                cached_tokens=int(r[4] or 0),
                image_tokens=int(r[5] or 0),
                completion_tokens=int(r[6] or 0),
                reasoning_tokens=int(r[7] or 0),
                mean_latency_ms=float(r[8] or 0),
                server_tool_calls=int(r[9] or 0),
            )
            for r in rows
        ]

    # -- deferred completions -----------------------------------------------------------------

    def create_deferred(self, request_id: str, owner: str, request: str) -> None:
        now = time.time()
        with self._write() as conn:
            conn.execute(
                deferred.insert().values(
                    id=request_id, owner=owner, status="pending", request=request, created_at=now, updated_at=now
                )
            )

    def claim_deferred(self, worker: str, lease_s: float, max_attempts: int = 3, batch: bool = False) -> Claim | None:
        """Take the oldest pending (or abandoned) request for `worker`: a deferred completion or a background
        response, or with `batch` a batch's request (in the order they were added); None when there is none.

        A request already claimed `max_attempts` times without a clean end (its process died while
        running it, again and again) is failed instead of being run once more.
        """
        now = time.time()
        claimable = sa.and_(
            deferred.c.batch_id.is_not(None) if batch else deferred.c.batch_id.is_(None),
            sa.or_(
                deferred.c.status == "pending", sa.and_(deferred.c.status == "running", deferred.c.lease_until < now)
            ),
        )
        while True:
            with self._write() as conn:
                query = sa.select(deferred.c.id, deferred.c.request, deferred.c.attempts, deferred.c.endpoint)
                query = query.where(claimable)
                if self.dialect == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                order = (deferred.c.created_at, deferred.c.ordinal) if batch else (deferred.c.created_at,)
                row = conn.execute(query.order_by(*order).limit(1)).first()
                if row is None:
                    return None
                if row.attempts >= max_attempts:
                    conn.execute(
                        deferred.update()
                        .where(deferred.c.id == row.id, claimable)
                        .values(
                            status="failed",
                            error_kind="ABANDONED",
                            error_message=f"The server stopped while running this request {row.attempts} times; "
                            "it is not run again.",
                            claimed_by=None,
                            lease_until=None,
                            updated_at=now,
                            finished_at=now,
                        )
                    )
                    log.error("deferred completion %s failed: its server stopped %d times", row.id, row.attempts)
                    continue
                claimed = conn.execute(
                    deferred.update()
                    .where(deferred.c.id == row.id, claimable)
                    .values(
                        status="running",
                        claimed_by=worker,
                        lease_until=now + lease_s,
                        attempts=deferred.c.attempts + 1,
                        updated_at=now,
                    )
                )
                return Claim(row.id, row.request, row.endpoint) if claimed.rowcount == 1 else None

    def deferred_owner(self, request_id: str) -> str | None:
        with self._read() as conn:
            return conn.scalar(sa.select(deferred.c.owner).where(deferred.c.id == request_id))

    def renew_leases(self, worker: str, request_ids: list[str], lease_s: float) -> set[str]:
        """Extend `worker`'s leases; returns the requests it still holds (a cancelled batch's are not)."""
        if not request_ids:
            return set()
        held = sa.and_(deferred.c.id.in_(request_ids), deferred.c.claimed_by == worker, deferred.c.status == "running")
        with self._write() as conn:
            conn.execute(deferred.update().where(held).values(lease_until=time.time() + lease_s))
            return set(conn.scalars(sa.select(deferred.c.id).where(held)))

    def release_claims(self, worker: str, clean: bool = False) -> int:
        """Put `worker`'s running requests back in the queue: its previous life died (they count as
        attempts), or it stops cleanly (`clean`: they do not)."""
        return self._requeue(deferred.c.claimed_by == worker, clean)

    def requeue_deferred(self, request_id: str) -> None:
        """Put one running request back in the queue without counting the attempt (no capacity now)."""
        self._requeue(deferred.c.id == request_id, clean=True)

    def _requeue(self, which: sa.ColumnElement[bool], clean: bool) -> int:
        values: dict[str, Any] = {"status": "pending", "claimed_by": None, "lease_until": None}
        if clean:
            values["attempts"] = deferred.c.attempts - 1
        with self._write() as conn:
            update = deferred.update().where(deferred.c.status == "running", which)
            return conn.execute(update.values(updated_at=time.time(), **values)).rowcount

    def finish_deferred(self, request_id: str, result: str) -> None:
        self._settle(request_id, status="done", result=result)

    def fail_deferred(self, request_id: str, kind: str, message: str) -> None:
        self._settle(request_id, status="failed", error_kind=kind, error_message=message)

    def _settle(self, request_id: str, **values: Any) -> None:
        now = time.time()
        with self._write() as conn:
            conn.execute(
                deferred.update()
                .where(deferred.c.id == request_id, deferred.c.status == "running")
                .values(claimed_by=None, lease_until=None, updated_at=now, finished_at=now, **values)
            )

    def take_deferred(self, request_id: str, owner: str, not_before: float) -> DeferredRow | None:
        """The owner's request; a finished one is handed out once (deleted in the same transaction)."""
        with self._write() as conn:
            mine = sa.and_(deferred.c.id == request_id, deferred.c.owner == owner, deferred.c.endpoint.is_(None))
            row = conn.execute(sa.select(deferred).where(mine)).first()
            if row is None:
                return None
            if row.created_at < not_before:
                conn.execute(deferred.delete().where(deferred.c.id == request_id))
                return None
            if row.status in ("done", "failed"):
                gone = conn.execute(
                    deferred.delete().where(deferred.c.id == request_id, deferred.c.status == row.status)
                )
                if gone.rowcount != 1:  # another poller took it first
                    return None
            return DeferredRow(**{k: row._mapping[k] for k in DeferredRow.__dataclass_fields__})

    def expire_deferred(self, not_before: float) -> int:
        with self._write() as conn:
            # Batches expire on their own; a background response's row stays until its run ends.
            ended = sa.or_(deferred.c.endpoint.is_(None), deferred.c.status.not_in(("pending", "running")))
            old = sa.and_(deferred.c.created_at < not_before, deferred.c.batch_id.is_(None), ended)
            return conn.execute(deferred.delete().where(old)).rowcount

    # -- server secrets -------------------------------------------------------------------------

    def secret(self, name: str, size: int = 32) -> bytes:
        """The named secret, made on first use; the same for every process sharing this database."""
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(server_secrets)
        fresh = base64.b64encode(secrets.token_bytes(size)).decode()
        with self._write() as conn:
            conn.execute(insert.values(name=name, value=fresh).on_conflict_do_nothing())
            value = conn.scalar(sa.select(server_secrets.c.value).where(server_secrets.c.name == name))
        return base64.b64decode(str(value))

    # -- stored responses ---------------------------------------------------------------------

    def save_response(self, response_id: str, owner: str, body: str, created_at: float) -> None:
        with self._write() as conn:
            conn.execute(responses.insert().values(id=response_id, owner=owner, body=body, created_at=created_at))

    def load_response(self, response_id: str, owner: str, not_before: float) -> str | None:
        """The owner's stored response, unless it expired (then it is deleted)."""
        query = sa.select(responses.c.body, responses.c.created_at).where(
            responses.c.id == response_id, responses.c.owner == owner
        )
        with self._write() as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            if row.created_at < not_before:
                conn.execute(responses.delete().where(responses.c.id == response_id))
                return None
            return str(row.body)

    def delete_response(self, response_id: str, owner: str) -> bool:
        """Delete the owner's response, with its event log and its run if it is a background one (a run
        still going is cancelled: its row goes, so its lease is not renewed)."""
        with self._write() as conn:
            gone = conn.execute(responses.delete().where(responses.c.id == response_id, responses.c.owner == owner))
            if gone.rowcount != 1:
                return False
            conn.execute(response_events.delete().where(response_events.c.response_id == response_id))
            conn.execute(deferred.delete().where(deferred.c.id == response_id, deferred.c.endpoint.is_not(None),
                                                 deferred.c.batch_id.is_(None)))  # fmt: skip
            return True

    def expire_responses(self, not_before: float) -> int:
        old = sa.select(responses.c.id).where(responses.c.created_at < not_before)
        with self._write() as conn:
            conn.execute(response_events.delete().where(response_events.c.response_id.in_(old)))
            return conn.execute(responses.delete().where(responses.c.created_at < not_before)).rowcount


def _key(row: Any) -> KeyRecord:
    models = row["models"]
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        redacted=row["redacted"],
        models=None if models is None else tuple(json.loads(models)),
        rpm=row["rpm"],
        tpm=row["tpm"],
        disabled=bool(row["disabled"]),
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        revoked_at=row["revoked_at"],
        tools=None if row.get("tools") is None else tuple(json.loads(row["tools"])),
    )


def _sqlite_setup(engine: sa.Engine) -> None:
    """WAL for concurrent readers; BEGIN IMMEDIATE so writers queue instead of failing mid-transaction."""

    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below drive transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=10000")
        # WAL is a property of the database file: switch once. The switch needs the file to itself,
        # so when several processes open a new database at once, the losers retry.
        for attempt in range(50):
            try:
                if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
