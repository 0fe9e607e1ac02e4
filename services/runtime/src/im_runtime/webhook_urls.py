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


def address_allowed(address: Address | str, allowed: Iterable[Network] = ()) -> bool:
    """Public unicast addresses only, unless the operator allowed a network holding this one."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    if any(ip in net for net in allowed if net.version == ip.version):
        return True
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
