"""Numbered migrations, applied once each, in order; safe to run from several processes at once."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from localxai.store import tables

schema_migrations = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)


def _initial(conn: sa.Connection) -> None:
    # Tables in their current shape: later migrations check before changing what this already made.
    for table in (tables.api_keys, tables.deferred, tables.rate_windows, tables.usage):  # not later tables
        table.create(conn)


def _deferred_attempts(conn: sa.Connection) -> None:
    """Count the runs of a deferred request, so one that kills its process is not retried forever."""
    if "attempts" not in {c["name"] for c in sa.inspect(conn).get_columns("deferred")}:
        conn.execute(sa.text("ALTER TABLE deferred ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"))


def _responses(conn: sa.Connection) -> None:
    """Stored responses (Responses API `store`, `previous_response_id`)."""
    tables.responses.create(conn, checkfirst=True)


def _server_secrets(conn: sa.Connection) -> None:
    """Secrets the server creates once and every replica shares (the key of sealed blobs)."""
    tables.server_secrets.create(conn, checkfirst=True)


def _key_tools(conn: sa.Connection) -> None:
    """Which server-side tools (code execution, MCP, web search) a key may use."""
    if "tools" not in {c["name"] for c in sa.inspect(conn).get_columns("api_keys")}:
        conn.execute(sa.text("ALTER TABLE api_keys ADD COLUMN tools TEXT"))


def _usage_tool_calls(conn: sa.Connection) -> None:
    """The ledger counts the server-side tool calls a key's requests ran."""
    if "server_tool_calls" not in {c["name"] for c in sa.inspect(conn).get_columns("usage")}:
        conn.execute(sa.text("ALTER TABLE usage ADD COLUMN server_tool_calls INTEGER NOT NULL DEFAULT 0"))


def _files(conn: sa.Connection) -> None:
    """Uploaded files and their bytes (the Files API)."""
    tables.files.create(conn, checkfirst=True)
    tables.file_chunks.create(conn, checkfirst=True)


def _file_texts(conn: sa.Connection) -> None:
    """The text extracted from uploaded files (attachments, format=text)."""
    tables.file_texts.create(conn, checkfirst=True)


def _collections(conn: sa.Connection) -> None:
    """Collections, their documents and chunks, with the full-text index of each database, and on
    PostgreSQL a pgvector column when the extension can be had (else vectors are scanned, as on SQLite)."""
    for table in (tables.collections, tables.collection_documents, tables.document_chunks):
        table.create(conn, checkfirst=True)
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("CREATE VIRTUAL TABLE IF NOT EXISTS document_chunks_fts USING fts5(content)")
        return
    conn.exec_driver_sql(
        "ALTER TABLE document_chunks ADD COLUMN tsv tsvector "
        "GENERATED ALWAYS AS (to_tsvector('english', content)) STORED"
    )
    conn.exec_driver_sql("CREATE INDEX ix_document_chunks_tsv ON document_chunks USING GIN (tsv)")
    schema = vector_schema(conn, create=True)
    if schema is not None:
        conn.exec_driver_sql(f'ALTER TABLE document_chunks ADD COLUMN embedding_vec "{schema}".vector')


def vector_schema(conn: sa.Connection, create: bool = False) -> str | None:
    """The schema pgvector lives in (installed into public when `create` and the server has it), or None."""
    if create:
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
            savepoint.commit()
        except sa.exc.DBAPIError:
            savepoint.rollback()  # not installed on this server, or not ours to install
    query = (
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    )
    return conn.exec_driver_sql(query).scalar()


def _batches(conn: sa.Connection) -> None:
    """Batches; their requests are rows of the deferred queue, with the batch's columns."""
    tables.batches.create(conn, checkfirst=True)
    have = {c["name"] for c in sa.inspect(conn).get_columns("deferred")}
    for column in ("batch_id", "batch_request_id", "ordinal", "endpoint", "model", "finished_at"):
        if column not in have:  # a database made by _initial from the current shape has them
            kind = tables.deferred.c[column].type.compile(conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE deferred ADD COLUMN {column} {kind}"))
    have_indexes = {i["name"] for i in sa.inspect(conn).get_indexes("deferred")}
    for index in tables.deferred.indexes:
        if index.name not in have_indexes:
            index.create(conn)


def _response_events(conn: sa.Connection) -> None:
    """The event log of background responses (GET /v1/responses/{id}?stream=true replays it)."""
    tables.response_events.create(conn, checkfirst=True)


MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "keys, deferred completions, rate windows, usage ledger", _initial),
    (2, "deferred completions: attempts", _deferred_attempts),
    (3, "stored responses", _responses),
    (4, "server secrets", _server_secrets),
    (5, "api keys: server-side tools", _key_tools),
    (6, "usage ledger: server-side tool calls", _usage_tool_calls),
    (7, "files", _files),
    (8, "file texts", _file_texts),
    (9, "collections", _collections),
    (10, "batches", _batches),
    (11, "background response events", _response_events),
]

_PG_LOCK = 7_344_221  # advisory lock id: one migrating process at a time


def migrate(engine: sa.Engine) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied now."""
    applied_now = []
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK})
        schema_migrations.create(conn, checkfirst=True)
        done = set(conn.scalars(sa.select(schema_migrations.c.version)))
        for version, name, apply in MIGRATIONS:
            if version in done:
                continue
            apply(conn)
            conn.execute(schema_migrations.insert().values(version=version, name=name, applied_at=time.time()))
            applied_now.append(version)
    return applied_now
