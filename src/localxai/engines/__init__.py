"""Engines produce tokens; the core talks to them through `engines.base.Engine` only."""
