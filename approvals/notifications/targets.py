"""Where a webhook may point: public addresses only, checked against what the host resolves to.

A webhook URL is chosen by a workspace admin, but the request is made from inside our network,
so without a check it could reach the loopback interface, the private network, link-local
addresses or a cloud metadata service (169.254.169.254, fd00:ec2::254). The check runs at
delivery time on the resolved addresses, and the request then connects to exactly the address
that was vetted (the URL's host stays in the Host header and in TLS's SNI and certificate
check), so a DNS answer that changes between check and connect (DNS rebinding) cannot get
around it. Creation also refuses a URL whose host resolves to such an address, as a courtesy:
the delivery-time check is the one that holds.

WEBHOOK_ALLOW_PRIVATE_TARGETS=true turns this off, for local receivers and the tests.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedTarget(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach."""


@dataclass(frozen=True)
class Target:
    url: httpx.URL  # with the vetted address as its host
    host: str  # the original host, for the Host header and TLS


def private_targets_allowed() -> bool:
    return bool(getattr(settings, "WEBHOOK_ALLOW_PRIVATE_TARGETS", False))


def why_blocked(address: IPAddress) -> str | None:
    """None for a public unicast address, else what kind of address it is."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:127.0.0.1 reaches 127.0.0.1
        address = mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata lives here)"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_private:
        return "private"
    if not address.is_global:  # shared address space (100.64/10), reserved, documentation…
        return "not public"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """The host's addresses (the host itself when it is an IP literal)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # getaddrinfo may add a %scope to IPv6 link-local addresses: drop it to parse.
    return list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos)
    )


def vet(addresses: list[IPAddress], host: str) -> IPAddress:
    """The first address, if every address is public; a host with any non-public address is
    refused whole, so which record a client would pick does not matter."""
    for address in addresses:
        reason = why_blocked(address)
        if reason:
            raise BlockedTarget(
                f"{host} resolves to {address}, a {reason} address; webhooks may only target "
                "public addresses (WEBHOOK_ALLOW_PRIVATE_TARGETS allows others)"
            )
    if not addresses:
        raise BlockedTarget(f"{host} does not resolve to any address")
    return addresses[0]


def pin(url: str) -> Target:
    """Resolve and vet the URL's host now; the returned URL connects to the vetted address.
    Raises BlockedTarget, or OSError when the host does not resolve."""
    parsed = httpx.URL(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if private_targets_allowed():
        return Target(url=parsed, host=host)
    address = vet(resolve(host, port), host)
    return Target(url=parsed.copy_with(host=str(address)), host=host)


def check_at_creation(url: str) -> str | None:
    """Why this URL is refused, or None. A host that does not resolve (yet) is accepted: it is
    vetted again at every delivery."""
    if private_targets_allowed():
        return None
    try:
        pin(url)
    except BlockedTarget as exc:
        return str(exc)
    except (OSError, httpx.InvalidURL, UnicodeError):
        return None
    return None


def post(client: httpx.Client, url: str, *, content: bytes, headers: dict[str, str]):
    """POST to the URL through its vetted address. Raises BlockedTarget or httpx errors."""
    try:
        target = pin(url)
    except OSError as exc:  # the name does not resolve: a delivery error like a refused connect
        raise httpx.ConnectError(f"cannot resolve {httpx.URL(url).host}: {exc}") from exc
    headers = {**headers, "Host": _host_header(target)}
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    return client.post(target.url, content=content, headers=headers, extensions=extensions)


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.url.scheme == "https" else 80
    port = target.url.port
    return host if port in (None, default) else f"{host}:{port}"
