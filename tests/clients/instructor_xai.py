"""instructor's `from_xai` client in TOOLS mode (xai-sdk over gRPC, the tool forced) against localxai:
`python instructor_xai.py HOST:PORT API_KEY MODEL RUNS MAX_TOKENS` prints one JSON line per run,
{"ok": true, "value": ...} or {"ok": false, "error": ...}. Run by tests/test_forced_budget.py in
.venv-clients (make py-clients)."""

import json
import sys

import instructor
from pydantic import BaseModel, Field
from xai_sdk import Client


class Address(BaseModel):
    street: str
    city: str


class Person(BaseModel):
    """A person described in the text."""

    name: str
    biography: str = Field(description="everything known about the person, in detail")
    hobbies: list[str]
    address: Address


def main() -> None:
    host, key, model, runs, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    client = instructor.from_xai(Client(api_key=key, api_host=host, timeout=300), mode=instructor.Mode.TOOLS)
    for run in range(runs):
        try:
            person = client.chat.completions.create(
                model=model,
                response_model=Person,
                messages=[{"role": "user", "content": "Ada Lovelace wrote the first program. Describe her."}],
                max_tokens=max_tokens,
                temperature=1.0,
                seed=run,
                max_retries=0,
            )
            print(json.dumps({"ok": True, "value": person.model_dump()}), flush=True)
        except Exception as exc:  # reported to the test, which fails naming it
            print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}), flush=True)


if __name__ == "__main__":
    main()
