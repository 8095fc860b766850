"""xAI's agent tools: the loop that runs server-side tool calls (loop.py) and their executors."""
