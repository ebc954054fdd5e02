"""SSRF-guarded outbound HTTP for every live source.

Request-time fetches take URLs from clients (RSS ``links``) and from upstreams (redirects,
search results), so each fetch must not reach the server's own network: loopback, private,
link-local (cloud metadata at 169.254.169.254), carrier-grade NAT, multicast, reserved and
unspecified addresses are refused unless the exact ``host:port`` (or a bare ``host`` for any
port) is in the allow-list (``--live-allow-host``; tests allow ``127.0.0.1:PORT``).

The check is made twice: before each hop (clear error, no connection attempted) and again at
connect time inside the transport, which connects to the very address it checked. The second
check closes the DNS-rebinding window between "resolve and check" and "connect". Redirects are
followed by hand so every hop is checked; proxies from the environment are ignored because a
proxy would connect on our behalf. Every fetch has a total deadline and a body size cap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx

_REDIRECTS = {301, 302, 303, 307, 308}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_CREDENTIALS = {"authorization", "cookie", "proxy-authorization"}


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


class FetchError(Exception):
    """An outbound fetch failed. ``blocked``: refused by the guard; ``timeout``: deadline hit."""

    def __init__(
        self, message: str, *, blocked: bool = False, timeout: bool = False, status: int | None = None
    ):
        super().__init__(message)
        self.blocked = blocked
        self.timeout = timeout
        self.status = status


class BlockedURLError(FetchError):
    def __init__(self, message: str) -> None:
        super().__init__(message, blocked=True)


@dataclass(frozen=True)
class FetchLimits:
    """Per-fetch limits. ``total_timeout_s`` covers every hop of a redirect chain."""

    connect_timeout_s: float = 5.0
    total_timeout_s: float = 10.0
    max_bytes: int = 5 * 1024 * 1024
    max_redirects: int = 5


@dataclass(frozen=True)
class FetchResponse:
    status_code: int
    headers: httpx.Headers
    content: bytes
    url: str

    def json(self) -> Any:
        import json

        return json.loads(self.content)


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return is_public_address(mapped)
        if ip.teredo is not None:
            return is_public_address(ip.teredo[1])
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return False
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


class AddressPolicy:
    """Decides which (host, port) pairs may be contacted and resolves them to checked addresses."""

    def __init__(self, allowed_hosts: Iterable[str] = ()) -> None:
        self._allowed = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())

    def is_allow_listed(self, host: str, port: int) -> bool:
        host = host.lower().strip("[]")
        return (
            host in self._allowed or f"{host}:{port}" in self._allowed or f"[{host}]:{port}" in self._allowed
        )

    async def resolve(self, host: str, port: int) -> list[str]:
        """Addresses to connect to for ``host:port``; raises :class:`BlockedURLError` when any
        resolved address is non-public and the pair is not allow-listed."""
        bare = host.strip("[]")
        try:
            literal = ipaddress.ip_address(bare)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(bare, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise FetchError(f"cannot resolve {bare}: {exc.strerror or exc}") from exc
            addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
        if self.is_allow_listed(bare, port):
            return addresses
        for address in addresses:
            if not is_public_address(ipaddress.ip_address(address)):
                raise BlockedURLError(
                    f"refusing to fetch {bare}:{port}: {address} is a private, loopback or link-local "
                    "address (allow it with --live-allow-host)"
                )
        if not addresses:
            raise FetchError(f"cannot resolve {bare}")
        return addresses


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy approved, re-resolving at connect time."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._policy.resolve(host, port)
        except FetchError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed for live fetches")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with a connection pool whose network backend is :class:`_CheckedBackend`."""

    def __init__(self, policy: AddressPolicy) -> None:
        super().__init__(trust_env=False)
        # httpx has no public knob for the network backend; swap the pool it built for one that
        # has the same TLS settings but connects through the checked backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=20,
            network_backend=_CheckedBackend(policy),
        )


def _blocked_cause(exc: BaseException) -> BlockedURLError | None:
    """The guard's refusal behind an httpx error raised at connect time, if that is the cause."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockedURLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class GuardedSession:
    """One client session (connection reuse across pages/hops); create via :meth:`GuardedFetcher.session`."""

    def __init__(self, client: httpx.AsyncClient, policy: AddressPolicy, limits: FetchLimits) -> None:
        self._client = client
        self._policy = policy
        self._limits = limits

    async def get(
        self, url: str, *, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> FetchResponse:
        """GET ``url`` following up to ``max_redirects`` checked redirects; never raises for HTTP
        status codes (callers decide), raises :class:`FetchError` for everything else."""
        try:
            async with asyncio.timeout(self._limits.total_timeout_s):
                return await self._get(url, params, headers or {})
        except TimeoutError as exc:
            raise FetchError(
                f"timed out after {self._limits.total_timeout_s:g}s fetching {url}", timeout=True
            ) from exc

    async def _get(self, url: str, params: dict[str, Any] | None, headers: dict[str, str]) -> FetchResponse:
        request = self._client.build_request("GET", url, params=params, headers=headers)
        for _hop in range(self._limits.max_redirects + 1):
            await self._check_url(request.url)
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise FetchError(f"timed out fetching {request.url}", timeout=True) from exc
            except httpx.HTTPError as exc:
                blocked = _blocked_cause(exc)
                if blocked is not None:
                    raise BlockedURLError(str(blocked)) from exc
                raise FetchError(f"{exc or type(exc).__name__} ({request.url})") from exc
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    target = httpx.URL(urljoin(str(request.url), response.headers["location"]))
                    if _origin(target) != _origin(request.url):
                        # credentials are for the host they were given for, never a redirect target
                        headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIALS}
                    request = self._client.build_request("GET", target, headers=headers)
                    continue
                content = await self._read_capped(response)
                return FetchResponse(response.status_code, response.headers, content, str(request.url))
            finally:
                await response.aclose()
        raise FetchError(f"too many redirects (>{self._limits.max_redirects}) from {url}")

    async def _check_url(self, url: httpx.URL) -> None:
        if url.scheme not in {"http", "https"}:
            raise BlockedURLError(f"refusing to fetch {url}: only http and https are allowed")
        if not url.host:
            raise BlockedURLError(f"refusing to fetch {url}: no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        await self._policy.resolve(url.host, port)

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self._limits.max_bytes:
            raise FetchError(
                f"response from {response.url} is {declared} bytes (limit {self._limits.max_bytes})"
            )
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > self._limits.max_bytes:
                    raise FetchError(f"response from {response.url} exceeds {self._limits.max_bytes} bytes")
        except httpx.TimeoutException as exc:
            raise FetchError(f"timed out reading {response.url}", timeout=True) from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"{exc} ({response.url})") from exc
        return bytes(body)


class GuardedFetcher:
    """Factory for guarded sessions. Stateless apart from its settings, so one instance can be
    shared by all sources; each session owns its own httpx client (and event loop binding)."""

    def __init__(
        self,
        allowed_hosts: Iterable[str] = (),
        limits: FetchLimits | None = None,
        user_agent: str = "grokd-live/0.1",
    ):
        self.policy = AddressPolicy(allowed_hosts)
        self.limits = limits or FetchLimits()
        self._user_agent = user_agent

    @asynccontextmanager
    async def session(self) -> AsyncIterator[GuardedSession]:
        timeout = httpx.Timeout(self.limits.total_timeout_s, connect=self.limits.connect_timeout_s)
        transport = _CheckedTransport(self.policy)
        async with httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": self._user_agent},
        ) as client:
            yield GuardedSession(client, self.policy, self.limits)

    async def get(self, url: str, **kwargs: Any) -> FetchResponse:
        """One-off GET in its own session."""
        async with self.session() as s:
            return await s.get(url, **kwargs)
