"""The web playground at `/`: static files shipped in the package (localxai/web), served with a strict
Content-Security-Policy, and two small JSON documents the page needs beside the public API.

The page, its assets and `/playground/config.json` (whether a key is needed) are public; everything
else, `/playground/models.json` included, goes through the gateway's authentication like the API.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from localxai.agent.loop import Agent
from localxai.auth import ApiKey
from localxai.chat import ServerTool
from localxai.errors import NotFound
from localxai.runtime import Runtime

ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "snippets.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PLAYGROUND_TOOLS = ("code_execution", "web_search", "mcp")  # the server-side tools the page can turn on
PUBLIC_PATHS = frozenset({"/", "/playground/config.json", *(f"/playground/{name}" for name in ASSETS)})

# Same-origin only, no inline script or style, images from the page's own data: and blob: URLs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: an upgraded server serves its own page
}


def _read(name: str) -> bytes:
    return (resources.files("localxai") / "web" / name).read_bytes()


def _unavailable(agent: Agent, kind: str, caller: ApiKey) -> str | None:
    if not caller.may_run(kind):
        return "this API key may not use it"
    return agent.unavailable(ServerTool(kind))


def add_routes(app: FastAPI, runtime: Runtime) -> None:
    """Read the page once (at start-up, off any request) and route it."""
    page = _read("index.html")
    assets = {name: _read(name) for name in ASSETS}

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=HEADERS)

    @app.get("/playground/config.json", include_in_schema=False)
    async def config() -> dict[str, Any]:
        """Public: whether the page must ask for a key before calling the API, and the gRPC port its
        xai-sdk snippets point at (0: this server has no gRPC listener)."""
        return {"key_required": not runtime.auth.open_access, "grpc_port": runtime.grpc_port}

    @app.get("/playground/models.json", include_in_schema=False)
    async def models(request: Request) -> dict[str, Any]:
        """What /v1/language-models does not say (as xAI's does not): which reasoning efforts a model takes,
        and which of the server-side tools the page offers this server runs (kind -> why not, or None)."""
        agent = runtime.conversations.agent
        return {
            "models": [
                {"id": m.id, "reasoning": m.reasoning, "reasoning_efforts": list(m.reasoning_efforts)}
                for m in runtime.service.list_models()
            ],
            "server_tools": {kind: _unavailable(agent, kind, request.state.api_key) for kind in PLAYGROUND_TOOLS},
        }

    @app.get("/playground/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in assets:
            raise NotFound(f"No route for GET /playground/{name}.")
        return Response(assets[name], media_type=ASSETS[name], headers=HEADERS)
