"""Where a tenant-configured webhook may point. A tenant admin types the URL and the notifier calls
it from inside the deployment, so without these rules the service would reach internal hosts for
whoever holds an admin token (cloud metadata at 169.254.169.254, the database, the brokers).

Pure: `check_url` judges the text of a URL (im-api refuses a bad one with 422); `address_allowed`
judges each address a name resolves to (the notifier's resolver, at every connect, so a name that
later resolves to a private address is refused too). An operator may allow named networks, e.g.
a webhook gateway of their own on 10.0.5.0/24, and (development only) plain http.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

URL_MAX_CHARS = 2048

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def networks(texts: Iterable[str]) -> list[Network]:
    """CIDR texts ("10.0.5.0/24", "127.0.0.1/32") as networks; a bad one raises ValueError."""
    return [ipaddress.ip_network(text.strip(), strict=False) for text in texts if text.strip()]


# IPv6 forms that carry an IPv4 address the network may route to: NAT64 (RFC 6052, RFC 8215) and
# the deprecated IPv4-compatible ::a.b.c.d (6to4 and Teredo have accessors of their own).
_EMBEDDING = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"),
              ipaddress.ip_network("::/96"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None) if v4 is not None]
    if any(ip in net for net in _EMBEDDING):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def address_allowed(address: Address | str, allowed: Iterable[Network] = ()) -> bool:
    """Public unicast addresses only, unless the operator allowed a network holding this one. An
    IPv6 address that embeds an IPv4 one (::ffff:127.0.0.1, 64:ff9b::a9fe:a9fe, 2002:7f00:1::)
    is judged by that IPv4 address too."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    allowed = list(allowed)
    if any(ip in net for net in allowed if net.version == ip.version):
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner:
            return all(address_allowed(v4, allowed) for v4 in inner)
    # is_global excludes private, loopback, link-local, shared (100.64/10), reserved and
    # documentation ranges; multicast is "global" for some ranges, and never a webhook.
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_http: bool = False, allowed: Iterable[Network] = ()) -> str | None:
    """Why this URL may not be a webhook, or None when it may."""
    if len(url) > URL_MAX_CHARS:
        return f"must be at most {URL_MAX_CHARS} characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number or out of range
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in (("https", "http") if allow_http else ("https",)):
        return "must be an https URL" if not allow_http else "must be an http or https URL"
    host = parts.hostname
    if not host:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (the request is signed instead)"
    if parts.fragment:
        return "must not have a fragment"
    if port == 0:
        return "has port 0"
    allowed = list(allowed)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return None if address_allowed(ip, allowed) else "points at a private, loopback or link-local address"
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")) or "." not in host:
        # Names that only mean something inside a network; whatever they resolve to is checked
        # again at connect, but refusing them here gives the admin a clear answer at once.
        if not allowed:
            return "points at an internal host name"
    return None
