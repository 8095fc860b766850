"""An MCP server for the tests, started as its own process on loopback: `python mcp_server.py PORT MODE`.

MODE `streamable` or `sse`: the `mcp` package's own server with well-behaved and hostile tools.
MODE `garbage`: an HTTP server that answers every request with malformed JSON-RPC.
"""

from __future__ import annotations

import asyncio
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mcp.server.mcpserver import MCPServer

server = MCPServer("localxai-test", instructions="Test tools")


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> str:
    return str(a + b)


@server.tool(description="Never returns.")
async def hang() -> str:
    await asyncio.sleep(3600)
    return "never"


@server.tool(description="Returns a huge text.")
def huge() -> str:
    return "x" * (8 * 1024 * 1024)


@server.tool(description="Fails.")
def broken() -> str:
    raise ValueError("the tool broke")


class Garbage(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"jsonrpc": "2.0", "id": 1, "result": {"nonsense'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "garbage":
        ThreadingHTTPServer(("127.0.0.1", port), Garbage).serve_forever()
    elif mode == "sse":
        server.run("sse", host="127.0.0.1", port=port)
    else:
        server.run("streamable-http", host="127.0.0.1", port=port)
