"""SSRF guard: private targets are refused before any connection, allow-list is exact."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from grokd.server.live.http_guard import (
    BlockedURLError,
    FetchError,
    FetchLimits,
    GuardedFetcher,
    is_public_address,
)


def _get(fetcher: GuardedFetcher, url: str):
    return asyncio.run(fetcher.get(url))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "::1",
        "fc00::1",
        "fd00:ec2::254",
        "fe80::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_private_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


def test_public_addresses_pass() -> None:
    assert is_public_address(ipaddress.ip_address("8.8.8.8"))
    assert is_public_address(ipaddress.ip_address("2606:4700:4700::1111"))


def test_loopback_refused_without_allow_list(stub) -> None:
    stub.routes["/"] = lambda r: (200, {}, b"secret")
    with pytest.raises(BlockedURLError):
        _get(GuardedFetcher(), stub.base + "/")
    assert stub.requests == []  # refused before connecting


def test_loopback_allowed_when_exact_host_port_listed(stub) -> None:
    stub.routes["/"] = lambda r: (200, {}, b"hello")
    response = _get(GuardedFetcher([stub.hostport]), stub.base + "/")
    assert response.status_code == 200 and response.content == b"hello"


def test_allow_list_is_per_port(stub) -> None:
    with pytest.raises(BlockedURLError):
        _get(GuardedFetcher([f"127.0.0.1:{stub.port + 1}"]), stub.base + "/")


def test_metadata_endpoint_refused() -> None:
    with pytest.raises(BlockedURLError):
        _get(GuardedFetcher(), "http://169.254.169.254/latest/meta-data/")


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://10.0.0.1/",
        "http://localhost/",
        "http://127.1/",
        "http://2130706433/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_other_private_targets_refused(url: str) -> None:
    with pytest.raises(BlockedURLError):
        _get(GuardedFetcher(), url)


def test_non_http_scheme_refused() -> None:
    with pytest.raises(BlockedURLError):
        _get(GuardedFetcher(), "file:///etc/passwd")


def test_redirect_into_private_range_refused(stub) -> None:
    stub.routes["/hop"] = lambda r: (302, {"location": "http://169.254.169.254/latest/meta-data/"}, b"")
    with pytest.raises(BlockedURLError, match="169.254.169.254"):
        _get(GuardedFetcher([stub.hostport]), stub.base + "/hop")


def test_redirect_to_other_loopback_port_refused(stub) -> None:
    stub.routes["/hop"] = lambda r: (301, {"location": f"http://127.0.0.1:{stub.port + 1}/admin"}, b"")
    with pytest.raises(BlockedURLError):
        _get(GuardedFetcher([stub.hostport]), stub.base + "/hop")


def test_allowed_redirects_are_followed(stub) -> None:
    stub.routes["/a"] = lambda r: (307, {"location": "/b"}, b"")
    stub.routes["/b"] = lambda r: (200, {}, b"final")
    response = _get(GuardedFetcher([stub.hostport]), stub.base + "/a")
    assert response.content == b"final" and response.url.endswith("/b")


def test_redirect_loop_is_bounded(stub) -> None:
    stub.routes["/loop"] = lambda r: (302, {"location": "/loop"}, b"")
    with pytest.raises(FetchError, match="too many redirects"):
        _get(GuardedFetcher([stub.hostport], FetchLimits(max_redirects=3)), stub.base + "/loop")


def test_body_size_limit(stub) -> None:
    stub.routes["/big"] = lambda r: (200, {}, b"x" * 5000)
    with pytest.raises(FetchError, match="bytes"):
        _get(GuardedFetcher([stub.hostport], FetchLimits(max_bytes=1000)), stub.base + "/big")


def test_total_timeout(stub) -> None:
    import time

    def slow(r):
        time.sleep(1.0)
        return 200, {}, b"late"

    stub.routes["/slow"] = slow
    with pytest.raises(FetchError) as info:
        _get(GuardedFetcher([stub.hostport], FetchLimits(total_timeout_s=0.3)), stub.base + "/slow")
    assert info.value.timeout


def test_connect_time_check_catches_rebinding() -> None:
    """The transport re-checks at connect time even if the pre-check was skipped."""
    from grokd.server.live.http_guard import AddressPolicy, _CheckedBackend

    async def connect() -> None:
        await _CheckedBackend(AddressPolicy()).connect_tcp("127.0.0.1", 9)

    import httpcore

    with pytest.raises(httpcore.ConnectError, match="refusing"):
        asyncio.run(connect())


def test_credentials_not_forwarded_across_origins(stub) -> None:
    stub.routes["/start"] = lambda r: (302, {"location": f"http://localhost:{stub.port}/elsewhere"}, b"")
    stub.routes["/same"] = lambda r: (302, {"location": "/elsewhere"}, b"")
    stub.routes["/elsewhere"] = lambda r: (200, {}, r.headers.get("authorization", "none").encode())
    fetcher = GuardedFetcher([stub.hostport, f"localhost:{stub.port}"])

    async def fetch(path: str) -> bytes:
        return (await fetcher.get(stub.base + path, headers={"authorization": "Bearer secret"})).content

    assert asyncio.run(fetch("/same")) == b"Bearer secret"
    assert asyncio.run(fetch("/start")) == b"none"
