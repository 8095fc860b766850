"""Fetching image URLs without opening the server's network to its clients (SSRF).

Only http and https. Every hop — the first URL and each redirect (at most 3) — is resolved first and
refused if any address is not a public unicast one (loopback, private, link-local and cloud metadata,
multicast, reserved, IPv4-mapped forms of those), unless the operator allows private addresses. The
connection then goes to the address that was checked (the host name is kept for Host and TLS), so a
DNS answer cannot change between the check and the connection. Timeouts bound every step, and the
body is read in chunks and abandoned past the size limit: a 2 GB download is never buffered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

from localxai.errors import InvalidArgument

MAX_IMAGE_BYTES = 20 * 1024 * 1024
USER_AGENT = "localxai-image-fetch/1.0"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ImageFetchError(InvalidArgument):
    """An image URL could not be fetched; the message says which image and why."""


@dataclass(frozen=True)
class FetchPolicy:
    allow_private: bool = False  # --allow-private-image-urls
    max_bytes: int = MAX_IMAGE_BYTES
    timeout_s: float = 5.0  # connect, each read, and the whole fetch
    max_redirects: int = 3
    denied: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())  # always refused

    def allows(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.denied):
            return False
        if self.allow_private:
            return not address.is_unspecified and not address.is_multicast
        return address.is_global and not address.is_multicast


async def fetch_image(url: str, policy: FetchPolicy, label: str = "image") -> bytes:
    """The bytes at `url` (at most policy.max_bytes); raises ImageFetchError naming `label`."""
    deadline = time.monotonic() + policy.timeout_s * (policy.max_redirects + 2)
    timeout = httpx.Timeout(policy.timeout_s)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _hop in range(policy.max_redirects + 1):
            target, host = await _checked_target(url, policy, label)
            request = client.build_request(
                "GET",
                target,
                headers={"Host": _host_header(url), "User-Agent": USER_AGENT, "Accept": "image/*"},
                extensions={"sni_hostname": host},
            )
            try:
                response = await asyncio.wait_for(client.send(request, stream=True), _left(deadline))
            except (httpx.TimeoutException, TimeoutError):
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
                return await _read_limited(response, policy, label, deadline, url)
            finally:
                await response.aclose()
        raise ImageFetchError(f"{label}: more than {policy.max_redirects} redirects from {_shown(url)}.")


async def _checked_target(url: str, policy: FetchPolicy, label: str) -> tuple[str, str]:
    """The URL rewritten to a checked address, and the host name (for Host and TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImageFetchError(f"{label}: only http and https image URLs are fetched, got {_shown(url)}.")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ImageFetchError(f"{label}: invalid port in {_shown(url)}.") from None
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), policy.timeout_s
        )
    except (OSError, TimeoutError):
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


async def _read_limited(response: httpx.Response, policy: FetchPolicy, label: str, deadline: float, url: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise ImageFetchError(f"{label}: larger than {policy.max_bytes} bytes ({declared}).")
    body = bytearray()
    try:
        async with asyncio.timeout(_left(deadline)):
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > policy.max_bytes:
                    raise ImageFetchError(f"{label}: larger than {policy.max_bytes} bytes.")
    except (httpx.TimeoutException, TimeoutError):
        raise ImageFetchError(f"{label}: fetching {_shown(url)} timed out.") from None
    except httpx.HTTPError as exc:
        raise ImageFetchError(f"{label}: fetching {_shown(url)} failed: {type(exc).__name__}.") from None
    return bytes(body)


def _left(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2]


def _shown(url: str) -> str:
    """The URL for messages: without credentials, and not endless."""
    parts = urlsplit(url)
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return shown if len(shown) <= 120 else shown[:117] + "..."
