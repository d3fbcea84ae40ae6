"""The client address a request counts against (login and sign-up throttles, logs).

`X-Forwarded-For` is written by whoever sends the request, so it is believed only when the direct peer is a
trusted proxy (`CRM_BULK_TRUSTED_PROXIES`), and then only up to the first hop that is not one: walking the
header from the right, each trusted proxy vouches for the address left of it; the first address that is not
a trusted proxy is the client. With no trusted proxy (the default) the peer address is the client's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

from litestar import Request

from crm_bulk.settings import Settings

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
FORWARDED_FOR = "x-forwarded-for"
UNKNOWN = "unknown"


def _parse_address(text: str) -> Address | None:
    """An address as proxies write it (`1.2.3.4`, `::1`, `[::1]`), or None for anything else."""
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None


class TrustedProxies:
    """The proxies whose `X-Forwarded-For` is believed.

    A plain class rather than a dataclass: Litestar checks a dependency's value (the resources) with msgspec,
    which walks dataclass fields and cannot model a union of the two network types."""

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(network) for network in self.networks]})"

    @classmethod
    def from_settings(cls, settings: Settings) -> TrustedProxies:
        """The `trusted_proxies` setting, parsed."""
        return cls(settings.trusted_proxy_networks())

    def trusts(self, address: Address | None) -> bool:
        """True when `address` is one of the trusted proxies."""
        return address is not None and any(address in network for network in self.networks)

    def client_address(self, peer: str | None, forwarded_for: Iterable[str] = ()) -> str:
        """The client behind `peer`, given the request's `X-Forwarded-For` header values (in order)."""
        if peer is None:
            return UNKNOWN
        if not self.trusts(_parse_address(peer)):
            return peer
        hops: Sequence[str] = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        closest = peer
        for hop in reversed(hops):
            address = _parse_address(hop)
            if address is None:
                # Not an address: no trusted proxy wrote it, so the last one vouched for is the client.
                return closest
            if not self.trusts(address):
                return str(address)
            closest = str(address)
        return closest


def client_address(request: Request[Any, Any, Any], proxies: TrustedProxies) -> str:
    """The client address of `request` behind `proxies`."""
    peer = request.client.host if request.client is not None else None
    return proxies.client_address(peer, request.headers.getall(FORWARDED_FOR, []))
