"""The image URL guard and fetcher against a real local HTTP server (private URLs allowed only where said)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from localxai.chat import ImagePart
from localxai.media.fetch import MAX_IMAGE_BYTES, FetchPolicy, ImageFetchError, fetch_image
from localxai.media.images import load_images

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
        elif path == "/trickle":  # a byte every 0.1 s: no single read waits long, the body takes 5 s
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(50):
                    self.wfile.write(b"\x00")
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path.startswith("/slow-hop/"):  # each hop answers in 0.4 s: four take longer than 1 s
            time.sleep(0.4)
            hops = int(path.rsplit("/", 1)[1])
            self.send_response(302)
            self.send_header("Location", "/image.png" if hops == 0 else f"/slow-hop/{hops - 1}")
            self.end_headers()
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


def test_one_deadline_for_the_whole_fetch(base: str) -> None:
    policy = FetchPolicy(allow_private=True, timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match=r"image 0: fetching .*/trickle timed out"):
        fetch(f"{base}/trickle", policy)
    assert time.monotonic() - started < 3
    with pytest.raises(ImageFetchError, match="timed out"):
        fetch(f"{base}/slow-hop/2", policy)  # 1.6 s over four hops, each well within 1 s
    assert fetch(f"{base}/slow-hop/2", FetchPolicy(allow_private=True, timeout_s=3.0)) == PNG


def test_one_deadline_for_all_images_of_a_request(base: str) -> None:
    parts = [ImagePart(f"{base}/trickle"), ImagePart(f"{base}/trickle"), ImagePart(f"{base}/slow-hop/2")]
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="timed out"):
        asyncio.run(load_images(parts, FetchPolicy(allow_private=True, timeout_s=1.0)))
    assert time.monotonic() - started < 3


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


METADATA = ipaddress.ip_network("169.254.169.254/32")


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::127.0.0.1",  # IPv4-compatible (deprecated)
        "::169.254.169.254",
        "::10.0.0.1",
        "::ffff:0:127.0.0.1",  # IPv4-translated
        "::ffff:0:a9fe:a9fe",
        "64:ff9b::7f00:1",  # NAT64
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::192.168.0.1",
        "64:ff9b:1::808:808",  # local-use NAT64: where the IPv4 address sits is unknown
        "64:ff9b:1:ffff::1",
        "2002:7f00:1::1",  # 6to4
        "2002:a00:1::1",
        "2002:a9fe:a9fe::1",
        "2002:c0a8:101::1",
        "2002:ac10::1",
        "2001:0:808:808::80ff:fffe",  # Teredo, client 127.0.0.1 (stored inverted)
        "2001:0:a9fe:a9fe::1",  # Teredo, server 169.254.169.254
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo between public addresses: not globally reachable
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fec0::1",  # site-local
        "ff02::1",
        "::1:7f00:1",  # reserved (::/8)
    ],
)
def test_private_ipv4_inside_ipv6_refused(address: str) -> None:
    assert not FetchPolicy().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8",
        "::8.8.8.8",
        "::ffff:0:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses_allowed(address: str) -> None:
    assert FetchPolicy().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("::127.0.0.1", True),
        ("64:ff9b::7f00:1", True),
        ("2002:7f00:1::1", True),
        ("::1", True),
        ("10.0.0.1", True),
        ("169.254.169.254", False),
        ("::ffff:169.254.169.254", False),
        ("::169.254.169.254", False),
        ("::ffff:0:a9fe:a9fe", False),
        ("64:ff9b::a9fe:a9fe", False),
        ("2002:a9fe:a9fe::1", False),
        ("2001:0:a9fe:a9fe::1", False),
        ("2001:0:808:808::5601:5601", False),  # Teredo client 169.254.169.254
        ("64:ff9b:1::1", False),
    ],
)
def test_denied_addresses_refused_inside_ipv6_when_private_ones_are_allowed(address: str, allowed: bool) -> None:
    policy = FetchPolicy(allow_private=True, denied=(METADATA,))
    assert policy.allows(ipaddress.ip_address(address)) is allowed


def test_ipv4_inside_ipv6_refused_end_to_end(base: str) -> None:
    port = base.rsplit(":", 1)[1]
    for host in ("[::127.0.0.1]", "[::ffff:0:127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::1]"):
        with pytest.raises(ImageFetchError, match="private, loopback"):
            fetch(f"http://{host}:{port}/image.png", FetchPolicy())
    denied = FetchPolicy(allow_private=True, denied=(ipaddress.ip_network("127.0.0.0/8"),))
    with pytest.raises(ImageFetchError, match="private, loopback"):
        fetch(f"http://[::127.0.0.1]:{port}/image.png", denied)


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://x/", "data-less"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(ImageFetchError, match="only http and https"):
        fetch(url, FetchPolicy())


def test_credentials_never_echoed(base: str) -> None:
    with pytest.raises(ImageFetchError) as info:
        fetch(f"http://user:secret@{base.removeprefix('http://')}/missing.png")
    assert "secret" not in str(info.value)
