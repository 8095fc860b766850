"""localxai: a self-hosted server for the xAI Chat Completions API."""

__version__ = "0.1.0"
