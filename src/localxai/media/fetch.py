"""Fetching URLs for clients (images, web pages, MCP servers) without opening the server's network to
them (SSRF).

Only http and https. Every hop — the first URL and each redirect (at most 3) — is resolved first and
refused if any address is not a public unicast one (loopback, private, link-local and cloud metadata,
multicast, reserved), also when written as an IPv6 address that carries an IPv4 one (mapped, translated,
compatible, NAT64, 6to4, Teredo), unless the operator allows private addresses. The connection then goes
to the address that was checked (the host name is kept for Host and TLS), so a DNS answer cannot change
between the check and the connection. One deadline bounds the whole fetch, and the body is read in
chunks and abandoned past the size limit: a 2 GB download is never buffered.

`pinned_transport` applies the same check to every request of an httpx-style client (the MCP client's):
each connection goes to an address checked just before it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from localxai.errors import InvalidArgument

MAX_IMAGE_BYTES = 20 * 1024 * 1024
USER_AGENT = "localxai-image-fetch/1.0"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 ranges whose last 32 bits are an IPv4 address that the packet really goes to (besides
# ::ffff:0:0/96, IPv4-mapped, which Python decodes itself).
_IPV4_IN_LAST_32_BITS = (
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated, RFC 4291)
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT, RFC 7915)
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64 well-known prefix (RFC 6052)
)
# Local-use NAT64 (RFC 8215): the operator picks the prefix length, so where the IPv4 address sits is
# unknown; never fetched.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


class ImageFetchError(InvalidArgument):
    """An image URL could not be fetched; the message says which image and why."""


@dataclass(frozen=True)
class FetchPolicy:
    allow_private: bool = False  # --allow-private-image-urls
    max_bytes: int = MAX_IMAGE_BYTES
    timeout_s: float = 5.0  # the whole fetch: resolving, connecting and reading, every redirect included
    max_redirects: int = 3
    denied: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())  # always refused

    def allows(self, address: IPAddress) -> bool:
        reached = _reached(address)
        if reached is None:
            return False
        if any(a in network for a in (address, *reached) for network in self.denied):
            return False
        return all(self._allows_one(a) for a in reached)

    def _allows_one(self, address: IPAddress) -> bool:
        if self.allow_private:
            return not address.is_unspecified and not address.is_multicast
        site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
        return address.is_global and not address.is_multicast and not address.is_reserved and not site_local


def _reached(address: IPAddress) -> tuple[IPAddress, ...] | None:
    """The addresses a connection to `address` ends up at, each to be checked; None: never fetched."""
    if isinstance(address, ipaddress.IPv4Address):
        return (address,)
    if address in _LOCAL_NAT64:
        return None
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if int(address) > 1 and any(address in network for network in _IPV4_IN_LAST_32_BITS):  # not :: or ::1
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:  # the address itself too: Teredo is not globally reachable (RFC 4380)
        return (address, *address.teredo)
    return (address,)


@dataclass(frozen=True)
class Fetched:
    body: bytes
    content_type: str  # as the server sent it ("" when it sent none)
    url: str  # after redirects


async def fetch_image(url: str, policy: FetchPolicy, label: str = "image") -> bytes:
    """The bytes at `url` (at most policy.max_bytes), within policy.timeout_s in all; raises ImageFetchError."""
    return (await fetch(url, policy, label, accept="image/*")).body


async def fetch(url: str, policy: FetchPolicy, label: str, accept: str = "*/*") -> Fetched:
    """What `url` answers (at most policy.max_bytes), within policy.timeout_s in all; raises ImageFetchError
    (an InvalidArgument whose message names `label` and the URL)."""
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _fetch(url, policy, label, accept)
    except TimeoutError:
        raise ImageFetchError(f"{label}: fetching {_shown(url)} timed out.") from None


async def _fetch(url: str, policy: FetchPolicy, label: str, accept: str) -> Fetched:
    timeout = httpx.Timeout(policy.timeout_s)  # a backstop: the caller's deadline bounds the whole fetch
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _hop in range(policy.max_redirects + 1):
            target, host = await _checked_target(url, policy, label)
            request = client.build_request(
                "GET",
                target,
                headers={"Host": _host_header(url), "User-Agent": USER_AGENT, "Accept": accept},
                extensions={"sni_hostname": host},
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.TimeoutException:
                raise ImageFetchError(f"{label}: fetching {_shown(url)} timed out.") from None
            except httpx.HTTPError as exc:
                raise ImageFetchError(f"{label}: fetching {_shown(url)} failed: {type(exc).__name__}.") from None
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise ImageFetchError(f"{label}: fetching {_shown(url)} failed with HTTP {response.status_code}.")
                body = await _read_limited(response, policy, label, url)
                return Fetched(body, response.headers.get("content-type", ""), url)
            finally:
                await response.aclose()
        raise ImageFetchError(f"{label}: more than {policy.max_redirects} redirects from {_shown(url)}.")


async def _checked_target(url: str, policy: FetchPolicy, label: str) -> tuple[str, str]:
    """The URL rewritten to a checked address, and the host name (for Host and TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImageFetchError(f"{label}: only http and https URLs are fetched, got {_shown(url)}.")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ImageFetchError(f"{label}: invalid port in {_shown(url)}.") from None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ImageFetchError(f"{label}: cannot resolve the host of {_shown(url)}.") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses or not all(policy.allows(a) for a in addresses):
        raise ImageFetchError(
            f"{label}: {_shown(url)} resolves to a private, loopback, link-local or reserved address; "
            "such URLs are not fetched."
        )
    address = addresses[0]
    netloc = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    return parts._replace(netloc=netloc).geturl(), host


async def _read_limited(response: httpx.Response, policy: FetchPolicy, label: str, url: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise ImageFetchError(f"{label}: larger than {policy.max_bytes} bytes ({declared}).")
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > policy.max_bytes:
                raise ImageFetchError(f"{label}: larger than {policy.max_bytes} bytes.")
    except httpx.TimeoutException:
        raise ImageFetchError(f"{label}: fetching {_shown(url)} timed out.") from None
    except httpx.HTTPError as exc:
        raise ImageFetchError(f"{label}: fetching {_shown(url)} failed: {type(exc).__name__}.") from None
    return bytes(body)


def pinned_transport(library: Any, policy: FetchPolicy, label: str, max_bytes: int | None = None) -> Any:
    """An AsyncHTTPTransport of the httpx-style `library` (httpx, or httpx2 for the MCP client) whose every
    request goes to the address checked for its host just before (ImageFetchError if refused), and whose
    responses together end with an error past `max_bytes` (a server that never stops talking)."""
    received = 0

    class Pinned(library.AsyncHTTPTransport):  # type: ignore[misc]
        async def handle_async_request(self, request: Any) -> Any:
            url = str(request.url)
            target, host = await _checked_target(url, policy, label)
            request.url = type(request.url)(target)
            request.headers["Host"] = _host_header(url)
            request.extensions = {**request.extensions, "sni_hostname": host}
            response = await super().handle_async_request(request)
            if max_bytes is not None:
                response.stream = _Capped(response.stream)
            return response

    class _Capped(library.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, stream: Any) -> None:
            self._stream = stream

        async def __aiter__(self) -> Any:
            nonlocal received
            async for chunk in self._stream:
                received += len(chunk)
                if max_bytes is not None and received > max_bytes:
                    raise ImageFetchError(f"{label}: answered more than {max_bytes} bytes.")
                yield chunk

        async def aclose(self) -> None:
            await self._stream.aclose()

    return Pinned()


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2]


def _shown(url: str) -> str:
    """The URL for messages: without credentials, and not endless."""
    parts = urlsplit(url)
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return shown if len(shown) <= 120 else shown[:117] + "..."
