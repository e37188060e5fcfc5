"""The URL guard: which addresses a download may reach, checked on every connection."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from local_http import LocalServer, redirect, send_body

from nanollm.url_guard import IPAddress, URLBlockedError, blocked_reason, url_opener

BODY = b"public text\n" * 10


@pytest.mark.parametrize(("address", "reason"), [
    ("8.8.8.8", None),
    ("93.184.216.34", None),
    ("2606:4700:4700::1111", None),
    ("::ffff:8.8.8.8", None),           # IPv4-mapped public address
    ("64:ff9b::808:808", None),         # NAT64 of a public address
    ("2002:808:808::1", None),          # 6to4 of a public address
    ("127.0.0.1", "a loopback address"),
    ("127.8.9.10", "a loopback address"),
    ("::1", "a loopback address"),
    ("0.0.0.0", "the unspecified address"),
    ("::", "the unspecified address"),
    ("10.1.2.3", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fc00::1", "a private address"),
    ("169.254.1.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a reserved address"),
    ("100.64.0.1", "a shared (carrier-grade NAT) address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("169.254.170.2", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("168.63.129.16", "a cloud metadata address"),
    ("::ffff:127.0.0.1", "a loopback address (127.0.0.1 inside an IPv6 address)"),
    ("::ffff:10.0.0.1", "a private address (10.0.0.1 inside an IPv6 address)"),
    ("::ffff:169.254.169.254",
     "a cloud metadata address (169.254.169.254 inside an IPv6 address)"),
    ("64:ff9b::a9fe:a9fe", "a cloud metadata address (169.254.169.254 inside an IPv6 address)"),
    ("2002:a9fe:a9fe::", "a cloud metadata address (169.254.169.254 inside an IPv6 address)"),
    ("2002:7f00:1::", "a loopback address (127.0.0.1 inside an IPv6 address)"),
    ("::a9fe:a9fe", "a cloud metadata address (169.254.169.254 inside an IPv6 address)"),
    ("::808:808", "a deprecated IPv4-compatible IPv6 address"),
    ("64:ff9b:1::a", "a local-use NAT64 address"),
])
def test_address_policy(address: str, reason: str | None) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer({"/book.txt": send_body(BODY)}) as srv:
        yield srv


def _read(url: str, **kwargs: object) -> bytes:
    with url_opener(**kwargs).open(url, timeout=5) as resp:  # type: ignore[arg-type]
        return bytes(resp.read())


def test_loopback_server_refused_by_default_allowed_on_request(server: LocalServer) -> None:
    with pytest.raises(URLBlockedError, match=r"^127\.0\.0\.1 is a loopback address$"):
        _read(server.url("/book.txt"))
    with pytest.raises(URLBlockedError, match=r"^127\.0\.0\.1 is a loopback address$"):
        _read(server.url("/book.txt").replace("http:", "https:"))
    assert server.requests == []  # refused before connecting
    assert _read(server.url("/book.txt"), allow_private=True) == BODY


@pytest.mark.parametrize(("host", "message"), [
    ("localhost", r"^localhost resolves to (127\.0\.0\.1|::1), which is a loopback address$"),
    ("2130706433", r"^2130706433 resolves to 127\.0\.0\.1, which is a loopback address$"),
    ("0x7f.1", r"^0x7f\.1 resolves to 127\.0\.0\.1, which is a loopback address$"),
    ("[::ffff:127.0.0.1]",
     r"^::ffff:127\.0\.0\.1 is a loopback address \(127\.0\.0\.1 inside an IPv6 address\)$"),
])
def test_other_spellings_of_loopback_are_refused(server: LocalServer, host: str,
                                                 message: str) -> None:
    with pytest.raises(URLBlockedError, match=message):
        _read(server.url("/book.txt", host=host))
    assert server.requests == []


def _only_first_server(ip: IPAddress) -> str | None:
    """The real policy, except that 127.0.0.1 plays a public server for these tests."""
    return None if ip == ipaddress.ip_address("127.0.0.1") else blocked_reason(ip)


@pytest.mark.parametrize(("target", "message"), [
    ("http://127.0.0.2:{port}/book.txt", r"^127\.0\.0\.2 is a loopback address$"),
    ("http://169.254.169.254/latest/meta-data/", r"^169\.254\.169\.254 is a cloud metadata"),
    ("http://[fd00:ec2::254]/latest/", r"^fd00:ec2::254 is a cloud metadata address$"),
    ("http://10.0.0.7/", r"^10\.0\.0\.7 is a private address$"),
    ("ftp://127.0.0.1/etc/passwd", r"only http:// and https:// URLs are followed"),
    ("file:///etc/passwd", r"only http:// and https:// URLs are followed"),
])
def test_redirects_are_checked_again(server: LocalServer, target: str, message: str) -> None:
    server.routes["/hop"] = redirect(target.format(port=server.port))
    server.routes["/hop2"] = redirect("/hop", code=301)
    with pytest.raises(URLBlockedError, match=message):
        _read(server.url("/hop2"), policy=_only_first_server)
    assert server.requests == ["/hop2", "/hop"]


def test_allowed_redirect_is_followed(server: LocalServer) -> None:
    server.routes["/hop"] = redirect("/book.txt")
    assert _read(server.url("/hop"), policy=_only_first_server) == BODY
    assert server.requests == ["/hop", "/book.txt"]
