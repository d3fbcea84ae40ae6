"""The client address behind trusted proxies only, in the app and in uvicorn's configuration."""

from __future__ import annotations

import pytest
from litestar import Litestar, get

from crm_bulk.api.client_address import TrustedProxies
from crm_bulk.cli import uvicorn_config
from crm_bulk.errors import ConfigError
from crm_bulk.settings import Settings

PROXIES = TrustedProxies(Settings(trusted_proxies="10.0.0.0/8, 192.168.1.7,::1").trusted_proxy_networks())


@pytest.mark.parametrize(
    ("proxies", "peer", "forwarded", "expected"),
    [
        # No trusted proxy: the header is ignored, whoever sends it.
        (TrustedProxies(), "127.0.0.1", ["6.6.6.6"], "127.0.0.1"),
        (TrustedProxies(), "testclient", ["6.6.6.6"], "testclient"),
        # An untrusted peer's header is ignored.
        (PROXIES, "203.0.113.9", ["6.6.6.6"], "203.0.113.9"),
        # Behind one trusted proxy: the address it saw.
        (PROXIES, "10.1.2.3", ["198.51.100.4"], "198.51.100.4"),
        # A forged left part is not believed: the right-most untrusted address is.
        (PROXIES, "10.1.2.3", ["6.6.6.6, 198.51.100.4"], "198.51.100.4"),
        # Chained trusted proxies, over several header lines.
        (PROXIES, "192.168.1.7", ["6.6.6.6, 198.51.100.4", "10.9.9.9"], "198.51.100.4"),
        # IPv6, bracketed or not.
        (PROXIES, "::1", ["[2001:db8::5]"], "2001:db8::5"),
        # Every hop trusted: the farthest one.
        (PROXIES, "10.1.2.3", ["10.0.0.2, 192.168.1.7"], "10.0.0.2"),
        # A trusted proxy without the header is the client itself.
        (PROXIES, "10.1.2.3", [], "10.1.2.3"),
        # Garbage where an address belongs: no proxy wrote it, so the last vouched-for hop is the client.
        (PROXIES, "10.1.2.3", ["garbage"], "10.1.2.3"),
        (PROXIES, "10.1.2.3", ["6.6.6.6, garbage, 10.0.0.4"], "10.0.0.4"),
        (PROXIES, None, ["6.6.6.6"], "unknown"),
    ],
)
def test_the_client_address(
    proxies: TrustedProxies, peer: str | None, forwarded: list[str], expected: str
) -> None:
    assert proxies.client_address(peer, forwarded) == expected


def test_no_proxy_is_trusted_by_default() -> None:
    assert Settings().trusted_proxy_networks() == ()
    assert TrustedProxies.from_settings(Settings()).networks == ()


@pytest.mark.parametrize("value", ["10.0.0.0/33", "proxy.example", "10.0.0.1,,nope"])
def test_a_bad_trusted_proxy_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="CRM_BULK_TRUSTED_PROXIES"):
        Settings.from_env({"CRM_BULK_TRUSTED_PROXIES": value})


def _app() -> Litestar:
    @get("/", sync_to_thread=False)
    def index() -> str:
        return "ok"

    return Litestar([index])


def test_uvicorn_ignores_proxy_headers_by_default() -> None:
    config = uvicorn_config(_app(), Settings())
    assert config.proxy_headers is False
    # Nothing trusted either, whatever FORWARDED_ALLOW_IPS says.
    assert config.forwarded_allow_ips == []


def test_uvicorn_trusts_only_the_configured_proxies() -> None:
    config = uvicorn_config(_app(), Settings(trusted_proxies="10.1.2.3/8,::1"))
    assert config.proxy_headers is True
    assert config.forwarded_allow_ips == ["10.0.0.0/8", "::1/128"]
