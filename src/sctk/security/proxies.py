"""Which address a request comes from, behind reverse proxies that are trusted by name.

X-Forwarded-For is written by the client as much as by a proxy, so it is believed only when
the peer that sent the request is a configured proxy (security.trusted_proxies), and then
only as far as the chain of trusted proxies goes: read from the right, the first address that
is not a trusted proxy is the client. An address the client prepended itself is never reached.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """The networks of security.trusted_proxies (validated by the settings already)."""
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str, forwarded_for: str | None, networks: tuple[Network, ...]) -> str:
    """The client's address: PEER itself unless PEER is a trusted proxy that forwarded for
    someone (FORWARDED_FOR, the X-Forwarded-For header's value)."""
    if not networks or not forwarded_for or not _trusted(peer, networks):
        return peer
    client = peer
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # a garbled hop: trust nothing to its left
        client = hop
        if not _trusted(hop, networks):
            break
    return client
