"""A Hugging Face Hub stand-in for the real `huggingface_hub` client (HF_ENDPOINT): the repo API and
`resolve` downloads with the Hub's headers and Range requests, plus faults: a cut transfer, corrupt bytes."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

API = re.compile(r"/api/models/([^/]+/[^/?]+)(?:/revision/[^/?]+)?(?:\?.*)?")
RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/([^?]+)(?:\?.*)?")


@dataclass
class FakeHub:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo -> file name -> content
    cut_once: set[str] = field(default_factory=set)  # files whose first GET breaks off halfway
    corrupt: set[str] = field(default_factory=set)  # files served with one byte flipped
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def commit(repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def downloads(self, name: str) -> list[str | None]:
        """The Range header of every GET of `name` (None: a whole-file request)."""
        return [r for m, p, r in self.log if m == "GET" and p.endswith("/" + name)]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._serve(body=True)

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def _serve(self, body: bool) -> None:
                with hub.lock:
                    hub.log.append((self.command, self.path, self.headers.get("Range")))
                if api := API.fullmatch(self.path):
                    return self._info(api[1])
                if resolve := RESOLVE.fullmatch(self.path):
                    return self._file(resolve[1], resolve[3], body)
                self._error(404, "EntryNotFound", "not found")

            def _info(self, repo: str) -> None:
                files = hub.repos.get(repo)
                if files is None:
                    return self._error(404, "RepoNotFound", "Repository not found")
                siblings = [
                    {
                        "rfilename": name,
                        "size": len(data),
                        "blobId": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
                        "lfs": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134},
                    }
                    for name, data in files.items()
                ]
                payload = {"id": repo, "modelId": repo, "sha": hub.commit(repo), "siblings": siblings}
                self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

            def _file(self, repo: str, name: str, body: bool) -> None:
                files = hub.repos.get(repo)
                if files is None:
                    return self._error(404, "RepoNotFound", "Repository not found")
                if name not in files:
                    return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": hub.commit(repo)})
                data = files[name]
                headers = {
                    "X-Repo-Commit": hub.commit(repo),
                    "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
                    "X-Linked-Size": str(len(data)),
                    "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                    "Accept-Ranges": "bytes",
                    "Content-Type": "application/octet-stream",
                }
                if name in hub.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                if body and (ranged := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))):
                    start = int(ranged[1])
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                if not body:
                    return self._send(200, b"", {**headers, "Content-Length": str(len(data))})
                with hub.lock:
                    cut = name in hub.cut_once
                    hub.cut_once.discard(name)
                status = 206 if start else 200
                if cut:  # promise the whole file, send half, hang up
                    self.send_response(status)
                    for key, value in {**headers, "Content-Length": str(len(data) - start)}.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data[start : start + (len(data) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(status, data[start:], headers)

            def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
                headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
                self._send(status, json.dumps({"error": message}).encode(), {**headers, **(extra or {})})

            def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                headers.setdefault("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

        return Handler
