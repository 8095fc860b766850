"""The tables, in their current shape (migrations.py builds and evolves them)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("redacted", sa.String(40), nullable=False),
    sa.Column("models", sa.Text),  # JSON list of model ids; NULL: every model
    sa.Column("tools", sa.Text),  # JSON list of server-side tool kinds it may use; NULL: every one served
    sa.Column("rpm", sa.Integer),  # requests per minute; NULL: unlimited
    sa.Column("tpm", sa.Integer),  # tokens per minute; NULL: unlimited
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("modified_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)

deferred = sa.Table(
    "deferred",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("owner", sa.String(40), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),  # pending | running | done | failed
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("result", sa.Text),
    sa.Column("error_kind", sa.String(60)),
    sa.Column("error_message", sa.Text),
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("lease_until", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),  # claims not ended by a clean stop
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # A batch's requests are rows of this queue too (migration 10), in the order they were added.
    sa.Column("batch_id", sa.String(48)),
    sa.Column("batch_request_id", sa.String(256)),  # the client's id, unique within its batch
    sa.Column("ordinal", sa.Integer),
    sa.Column("endpoint", sa.String(40)),  # what the request was sent as: /v1/chat/completions, /v1/responses
    sa.Column("model", sa.String(200)),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_deferred_status", "status", "created_at"),
    sa.Index("ix_deferred_batch", "batch_id", "ordinal"),
    sa.Index("ux_deferred_batch_request", "batch_id", "batch_request_id", unique=True),
)

# Batches (batches.py): a named group of requests, run in the background from the deferred queue.
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(48), primary_key=True),  # batch_<uuid>
    sa.Column("owner", sa.String(40), nullable=False),
    sa.Column("name", sa.String(1024), nullable=False),
    sa.Column("input_file_id", sa.String(48)),  # made from this JSONL file: sealed, nothing can be added
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # what is still pending then is cancelled
    sa.Column("cancelled_at", sa.Float),
    sa.Column("cancel_message", sa.Text),  # why the server cancelled it (it expired)
    sa.Index("ix_batches_owner_created", "owner", "created_at"),
)

rate_windows = sa.Table(
    "rate_windows",
    metadata,
    sa.Column("key_id", sa.String(40), primary_key=True),
    sa.Column("window", sa.Integer, primary_key=True),  # minutes since the epoch
    sa.Column("requests", sa.Integer, nullable=False, default=0),
    sa.Column("tokens", sa.Integer, nullable=False, default=0),
)

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key_id", sa.String(40), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("api", sa.String(10), nullable=False),  # rest | grpc | deferred | tools (a loop's server-side calls)
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("cached_tokens", sa.Integer, nullable=False),
    sa.Column("image_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("reasoning_tokens", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("server_tool_calls", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_usage_key_time", "key_id", "created_at"),
)

responses = sa.Table(
    "responses",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("owner", sa.String(40), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the stored response, core types as JSON (codec)
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_responses_created", "created_at"),
)

# A background response's events as its run produced them (background.py), in chunks: followers and
# late readers replay them. `run` tells one run from the next (a re-run after a crash starts anew).
response_events = sa.Table(
    "response_events",
    metadata,
    sa.Column("response_id", sa.String(40), primary_key=True),
    sa.Column("run", sa.BigInteger, primary_key=True),
    sa.Column("chunk", sa.Integer, primary_key=True),
    sa.Column("events", sa.Text, nullable=False),  # a JSON list of core events (codec)
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(48), primary_key=True),  # file_<uuid>
    sa.Column("owner", sa.String(40), nullable=False),
    sa.Column("filename", sa.String(1024), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),  # uploading | ready: only ready files are seen
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),  # the last chunk written: stale uploads are removed
    sa.Column("expires_at", sa.Float),
    sa.Index("ix_files_owner_created", "owner", "created_at"),
)

# A file's bytes in ordered chunks, in the database every replica shares (one transaction per chunk).
file_chunks = sa.Table(
    "file_chunks",
    metadata,
    sa.Column("file_id", sa.String(48), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# A file's text as extraction found it (PDF pages joined by form feeds), kept so each use reads it once.
file_texts = sa.Table(
    "file_texts",
    metadata,
    sa.Column("file_id", sa.String(48), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
)

# Collections of documents for search (collections.py): each its owner key's, with an embedding model
# and a chunking of its own.
collections = sa.Table(
    "collections",
    metadata,
    sa.Column("id", sa.String(48), primary_key=True),  # collection_<uuid>
    sa.Column("owner", sa.String(40), nullable=False),
    sa.Column("name", sa.String(1024), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),  # the embedding model
    sa.Column("chunk_chars", sa.Integer, nullable=False),
    sa.Column("overlap_chars", sa.Integer, nullable=False),
    sa.Column("inject_name", sa.Boolean, nullable=False),
    sa.Column("field_definitions", sa.Text, nullable=False),  # JSON list
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_collections_owner", "owner", "created_at"),
)

# A file in a collection, and where its indexing stands (processing | processed | failed). The row is
# the indexer's work queue too: a lease lets one worker (of any replica) take it; a dead one's lease ends.
collection_documents = sa.Table(
    "collection_documents",
    metadata,
    sa.Column("collection_id", sa.String(48), primary_key=True),
    sa.Column("file_id", sa.String(48), primary_key=True),
    sa.Column("owner", sa.String(40), nullable=False),
    sa.Column("name", sa.String(1024), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("fields", sa.Text, nullable=False),  # JSON object of strings
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("chunks", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("lease_until", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("indexed_at", sa.Float),
    sa.Index("ix_collection_documents_status", "status", "lease_until"),
)

# A document's chunks: text with its place in the document's text (characters) and page, its vector
# (float32, unit length). Keyword search uses the database's full-text index (created by migration 9:
# FTS5 on SQLite, a tsvector column on PostgreSQL); PostgreSQL with pgvector also keeps a vector column.
document_chunks = sa.Table(
    "document_chunks",
    metadata,
    sa.Column("rowid", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(48), nullable=False, unique=True),  # chunk_<uuid>
    sa.Column("collection_id", sa.String(48), nullable=False),
    sa.Column("file_id", sa.String(48), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("start_char", sa.Integer, nullable=False),
    sa.Column("end_char", sa.Integer, nullable=False),
    sa.Column("page", sa.Integer),
    sa.Column("embedding", sa.LargeBinary, nullable=False),
    sa.Index("ix_document_chunks_doc", "collection_id", "file_id", "seq"),
)

server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("value", sa.String(100), nullable=False),  # base64; never logged, never sent
)
