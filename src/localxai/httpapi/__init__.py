"""The REST adapter: FastAPI routes that translate xAI's JSON wire format to the core and back."""
