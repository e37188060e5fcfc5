"""Downloads that cannot be aimed at the machine's own network.

    opener = url_opener(allow_private=False)
    with opener.open("https://host/book.txt", timeout=30) as resp: ...   # URLBlockedError if not
    blocked_reason(ipaddress.ip_address("169.254.169.254"))  # -> "a cloud metadata address"

A server that downloads training text for its users must not let a URL read the cloud metadata
service, the loopback interface or other machines of the private network (server-side request
forgery). So every connection the opener makes, the first one and the one after each redirect,
resolves the host name once, refuses it when any of its addresses is loopback, private,
link-local, multicast, reserved, unspecified, a shared (carrier-grade NAT) address or a known
cloud metadata endpoint (also when hidden in an IPv6 form such as ::ffff:169.254.169.254), and
then connects to one of exactly the addresses it checked, so a DNS answer that changes between
the check and the connection (rebinding) changes nothing. Only http and https are followed.

With the guard on, proxy settings from the environment are not used: a proxy resolves the name
itself, where it cannot be checked. `allow_private=True` turns the guard off for local use.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import IO, Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Why an address is refused, or None when it is allowed (blocked_reason is the default).
Policy = Callable[[IPAddress], "str | None"]

SCHEMES = ("http", "https")
# Endpoints of cloud instance metadata services. Most also fall in a blocked range (link-local,
# private); Azure's WireServer is a public address, so only this list catches it.
_METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    "169.254.170.2",    # AWS ECS task metadata
    "fd00:ec2::254",    # AWS, IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",    # Azure WireServer
))
_SHARED = ipaddress.ip_network("100.64.0.0/10")       # carrier-grade NAT, RFC 6598
_NAT64 = ipaddress.ip_network("64:ff9b::/96")         # IPv4 in the last 32 bits, RFC 6052
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 prefix, RFC 8215
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")      # deprecated IPv4-compatible form


class URLBlockedError(ValueError):
    """A URL leads to an address the guard refuses, or uses a scheme other than http(s)."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches through mapping, 6to4, NAT64 or the old
    IPv4-compatible form; None for a plain IPv6 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # not :: or ::1 themselves
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why a download must not connect to `ip` ("a loopback address", ...); None when it is a
    public address. A pure function of the address."""
    if ip in _METADATA:
        return "a cloud metadata address"
    # Embedded IPv4 first: newer Pythons answer is_loopback etc. of ::ffff:127.0.0.1 for the
    # IPv4 address, older ones do not; this gives the same answer on every version.
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            why = blocked_reason(inner)
            if why is not None:
                return f"{why} ({inner} inside an IPv6 address)"
            if ip in _IPV4_COMPATIBLE:
                return "a deprecated IPv4-compatible IPv6 address"
            return None  # a public IPv4 address reached through NAT64 or 6to4
        if ip in _NAT64_LOCAL:
            return "a local-use NAT64 address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if not ip.is_global:
        return "not a public address"
    return None


def check_scheme(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise URLBlockedError(f"{url}: only http:// and https:// URLs are followed")


def checked_addresses(host: str, port: int, policy: Policy) -> list[tuple[Any, ...]]:
    """getaddrinfo results for host:port after checking that `policy` allows every address.

    One blocked address refuses the host: a name that resolves to both a public and a private
    address could be connected to either. Resolution errors (socket.gaierror) propagate."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id ("fe80::1%eth0")
        ip = ipaddress.ip_address(address)
        why = policy(ip)
        if why is not None:
            shown = host if host.strip("[]") == address else f"{host} resolves to {ip}, which"
            raise URLBlockedError(f"{shown} is {why}")
    return infos


def _checked_connector(policy: Policy) -> Callable[..., socket.socket]:
    """A socket.create_connection that resolves and checks the host once, then connects to a
    numeric address from that answer (no second lookup)."""

    def connect(address: tuple[str, int], timeout: Any,
                source_address: tuple[str, int] | None = None) -> socket.socket:
        host, port = address
        error: OSError | None = None
        for info in checked_addresses(host, port, policy):
            try:
                return socket.create_connection(info[4][:2], timeout, source_address)
            except OSError as exc:
                error = exc
        raise error or OSError(f"{host}: no address to connect to")

    return connect


class _CheckedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, policy: Policy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _checked_connector(policy)  # where http.client connects


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    """TLS still verifies the certificate against the host name, not the numeric address."""

    def __init__(self, *args: Any, policy: Policy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _checked_connector(policy)


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_CheckedHTTPConnection, req, policy=self.policy)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_CheckedHTTPSConnection, req, context=self._context,
                            policy=self.policy)


class _HTTPOnlyRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) only (urllib alone would also follow one to ftp://)."""

    def http_error_302(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                       headers: Any) -> Any:
        location = headers.get("location") or headers.get("uri")
        if location:
            try:
                check_scheme(urllib.parse.urljoin(req.full_url, location))
            except URLBlockedError:
                fp.close()
                raise
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def url_opener(*, allow_private: bool = False,
               policy: Policy = blocked_reason) -> urllib.request.OpenerDirector:
    """An opener for http(s) URLs only. Unless allow_private, every connection (redirects
    included) is checked with `policy` as the module docstring says, and environment proxies
    are ignored."""
    opener = urllib.request.OpenerDirector()
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.UnknownHandler(), urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(), _HTTPOnlyRedirectHandler()]
    if allow_private:
        handlers += [urllib.request.ProxyHandler(), urllib.request.HTTPHandler(),
                     urllib.request.HTTPSHandler()]
    else:
        handlers += [_CheckedHTTPHandler(policy), _CheckedHTTPSHandler(policy)]
    for handler in handlers:
        opener.add_handler(handler)
    return opener
