"""Where a webhook may be sent: an http(s) URL whose host resolves only to public addresses.

Loopback, private, link-local (cloud metadata at 169.254.169.254 included), CGNAT, multicast, reserved and
unspecified addresses are refused, so a tenant cannot make the platform call into its own network (SSRF).
The check runs at registration (the API answers 422) and again at every attempt on the freshly resolved
addresses, and the attempt connects to the very address that was checked: a name that resolved to a public
address at registration and to an internal one later (DNS rebinding) is refused, not followed.
`CRM_BULK_WEBHOOK_ALLOWED_NETWORKS` exempts networks an operator trusts (tests: loopback).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from crm_bulk.errors import PermanentError, ValidationError
from crm_bulk.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]

MAX_URL_LENGTH = 2048
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetRefusedError(PermanentError):
    """The target resolves to an address webhooks may not reach, or does not resolve."""


@dataclass(frozen=True)
class Target:
    """A parsed webhook URL."""

    url: str
    scheme: str
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        """The `Host` header the receiver expects (the port only when it is not the scheme's default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def url_for(self, address: IPAddress) -> str:
        """The URL with its host replaced by `address`, so the connection goes where the check looked."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_target(url: str) -> Target:
    """The URL's parts; `ValidationError` (field `url`) for anything but an absolute http(s) URL with a host
    and no credentials."""
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"url is longer than {MAX_URL_LENGTH} characters", field="url", code="too_long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"url is malformed: {exc}", field="url", code="invalid_url") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValidationError("url must be http:// or https://", field="url", code="invalid_url")
    if not parts.hostname:
        raise ValidationError("url has no host", field="url", code="invalid_url")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "url may not carry credentials; verify the webhook signature instead",
            field="url",
            code="invalid_url",
        )
    try:
        # International names travel as their ASCII (IDNA) form: in DNS and in the Host header alike.
        host = (
            parts.hostname.encode("idna").decode("ascii") if not parts.hostname.isascii() else parts.hostname
        )
    except UnicodeError:
        raise ValidationError(
            "url has a host name that is not valid", field="url", code="invalid_url"
        ) from None
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(
        url=url,
        scheme=parts.scheme,
        host=host,
        port=port or _DEFAULT_PORTS[parts.scheme],
        path=path,
    )


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an address literal resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses webhooks may reach: public ones, and those in `allowed` (operator exemptions)."""

    allowed: tuple[IPNetwork, ...] = ()
    resolver: Resolver = system_resolver

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        """The policy of `settings` (`webhook_allowed_networks`)."""
        return cls(allowed=settings.webhook_allowed_network_list())

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be reached, or None when it may."""
        if any(address in network for network in self.allowed if network.version == address.version):
            return None
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        if mapped is not None:
            return self.refusal(mapped)
        return _category(address)

    def check(self, target: Target) -> list[IPAddress]:
        """The target's addresses, all of them allowed; `TargetRefusedError` naming the first refused one
        (one internal address among public ones refuses the whole name: a client picks any of them)."""
        try:
            addresses = self.resolver(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise TargetRefusedError(f"{target.host} does not resolve: {exc}") from None
        if not addresses:
            raise TargetRefusedError(f"{target.host} does not resolve")
        for address in addresses:
            reason = self.refusal(address)
            if reason is not None:
                raise TargetRefusedError(f"{target.host} resolves to {address}, a {reason} address")
        return addresses


def _category(address: IPAddress) -> str | None:
    checks: Sequence[tuple[bool, str]] = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local (cloud metadata)"),
        (address.version == 4 and address in _CGNAT, "carrier-grade NAT"),
        (address.is_multicast, "multicast"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (not address.is_global, "non-public"),
    )
    for refused, name in checks:
        if refused:
            return name
    return None


def check_registration(url: str, policy: AddressPolicy) -> Target:
    """The target of a URL an admin registers; `ValidationError` (422) when it is malformed or reaches an
    address webhooks may not."""
    target = parse_target(url)
    try:
        policy.check(target)
    except TargetRefusedError as exc:
        raise ValidationError(f"url refused: {exc}", field="url", code="forbidden_target") from None
    return target
