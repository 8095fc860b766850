"""Persistent state: API keys, deferred completions, rate-limit windows and the usage ledger.

SQLAlchemy Core over SQLite (WAL, the default, in the data dir) or PostgreSQL (several replicas).
"""
