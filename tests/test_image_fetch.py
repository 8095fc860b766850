"""The image URL guard and fetcher against a real local HTTP server (private URLs allowed only where said)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from localxai.media.fetch import MAX_IMAGE_BYTES, FetchPolicy, ImageFetchError, fetch_image

from conftest import http_server

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
ALLOW = FetchPolicy(allow_private=True, timeout_s=2)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path
        if path == "/image.png":
            self._send(200, PNG)
        elif path.startswith("/redirect/"):
            hops = int(path.rsplit("/", 1)[1])
            self.send_response(302)
            self.send_header("Location", "/image.png" if hops == 0 else f"/redirect/{hops - 1}")
            self.end_headers()
        elif path == "/to-denied":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.2:{self.server.server_port}/image.png")
            self.end_headers()
        elif path == "/huge":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the size shows only while reading
            chunk = b"\x00" * (1024 * 1024)
            try:
                for _ in range(21):
                    self.wfile.write(chunk)
                self.wfile.write(b"\x00")
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/slow":
            time.sleep(3)
            self._send(200, PNG)
        else:
            self._send(404, b"not here")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with http_server(Handler) as url:
        yield url


def fetch(url: str, policy: FetchPolicy = ALLOW) -> bytes:
    return asyncio.run(fetch_image(url, policy, label="image 0"))


def test_fetches_when_private_urls_are_allowed(base: str) -> None:
    assert fetch(f"{base}/image.png") == PNG
    assert fetch(f"{base}/redirect/2") == PNG  # three hops in all


def test_too_many_redirects(base: str) -> None:
    with pytest.raises(ImageFetchError, match="more than 3 redirects"):
        fetch(f"{base}/redirect/3")


def test_http_errors_size_and_timeouts(base: str) -> None:
    with pytest.raises(ImageFetchError, match=r"image 0: .* failed with HTTP 404"):
        fetch(f"{base}/missing.png")
    with pytest.raises(ImageFetchError, match=f"larger than {MAX_IMAGE_BYTES} bytes"):
        fetch(f"{base}/huge")
    with pytest.raises(ImageFetchError, match="timed out"):
        fetch(f"{base}/slow", FetchPolicy(allow_private=True, timeout_s=0.5))


def test_redirects_are_checked_again(base: str) -> None:
    policy = FetchPolicy(allow_private=True, denied=(ipaddress.ip_network("127.0.0.2/32"),))
    with pytest.raises(ImageFetchError, match="private, loopback"):
        fetch(f"{base}/to-denied", policy)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/image.png",
        "http://localhost/image.png",  # a name that resolves to loopback
        "http://2130706433/image.png",  # 127.0.0.1 written as a decimal number
        "http://0x7f000001/image.png",  # ... and in hex
        "http://[::1]/image.png",
        "http://[::ffff:127.0.0.1]/image.png",  # IPv4-mapped IPv6
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.0.0.1/x.png",
        "http://[fd00:ec2::254]/x.png",
        "http://0.0.0.0/x.png",
    ],
)
def test_private_addresses_refused_by_default(url: str) -> None:
    with pytest.raises(ImageFetchError, match="private, loopback, link-local or reserved"):
        fetch(url, FetchPolicy())


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://x/", "data-less"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(ImageFetchError, match="only http and https"):
        fetch(url, FetchPolicy())


def test_credentials_never_echoed(base: str) -> None:
    with pytest.raises(ImageFetchError) as info:
        fetch(f"http://user:secret@{base.removeprefix('http://')}/missing.png")
    assert "secret" not in str(info.value)
