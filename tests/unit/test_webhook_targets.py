"""Webhook targets: URLs parsed strictly, internal addresses refused (SSRF) unless an operator exempts their
network, names checked on every address they resolve to; and the retry schedule."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from typing import Any

import pytest

from crm_bulk.errors import ConfigError, ValidationError
from crm_bulk.settings import Settings
from crm_bulk.webhooks.delivery import RetrySchedule
from crm_bulk.webhooks.targets import (
    AddressPolicy,
    IPAddress,
    TargetRefusedError,
    check_registration,
    parse_target,
)

POLICY = AddressPolicy()


@pytest.mark.parametrize(
    ("url", "category"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://172.16.5.4/hook", "private"),
        ("https://192.168.0.10/hook", "private"),
        ("http://[fd00:ec2::254]/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata)"),
        ("http://[fe80::1]/", "link-local (cloud metadata)"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://100.100.100.200/", "carrier-grade NAT"),
        ("http://224.0.0.251/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://240.0.0.1/", "reserved"),
    ],
)
def test_internal_targets_are_refused_at_registration(url: str, category: str) -> None:
    with pytest.raises(ValidationError, match="url refused") as refused:
        check_registration(url, POLICY)
    assert refused.value.field == "url"
    assert refused.value.code == "forbidden_target"
    assert f"a {category} address" in str(refused.value)


@pytest.mark.parametrize(
    "url", ["https://93.184.215.14/hooks/crm?x=1", "http://8.8.8.8:8443/", "https://[2606:4700::1111]/"]
)
def test_public_addresses_are_accepted(url: str) -> None:
    assert check_registration(url, POLICY).url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://93.184.215.14/", "http:// or https://"),
        ("https:///nohost", "no host"),
        ("https://user:pw@93.184.215.14/", "credentials"),
        ("https://93.184.215.14:99999/", "malformed"),
        ("https://93.184.215.14/" + "a" * 2048, "longer than"),
        ("not a url", "http:// or https://"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        check_registration(url, POLICY)


def test_an_allowed_network_is_exempt_and_only_it() -> None:
    policy = AddressPolicy.from_settings(Settings(webhook_allowed_networks="127.0.0.0/8"))
    assert check_registration("http://127.0.0.1:9/hook", policy).port == 9
    with pytest.raises(ValidationError, match="private"):
        check_registration("http://10.0.0.1/hook", policy)
    with pytest.raises(ValidationError, match="loopback"):
        check_registration("http://[::1]/hook", policy)


def _resolving_to(*addresses: str) -> AddressPolicy:
    def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in addresses]

    return AddressPolicy(resolver=resolve)


def test_a_name_with_one_internal_address_is_refused() -> None:
    target = parse_target("https://hooks.example.com/x")
    with pytest.raises(TargetRefusedError, match=re.escape("resolves to 10.0.0.7, a private address")):
        _resolving_to("93.184.215.14", "10.0.0.7").check(target)


def test_a_name_rebound_to_an_internal_address_is_refused_at_the_next_check() -> None:
    target = parse_target("https://hooks.example.com/x")
    assert _resolving_to("93.184.215.14").check(target) == [ipaddress.ip_address("93.184.215.14")]
    with pytest.raises(TargetRefusedError, match=re.escape("169.254.169.254")):
        _resolving_to("169.254.169.254").check(target)


def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(ValidationError, match="does not resolve"):
        check_registration("https://no-such-host.invalid/hook", POLICY)


def test_the_connection_url_names_the_checked_address_and_the_host_header_the_name() -> None:
    target = parse_target("https://hooks.example.com:8443/in?a=1")
    assert target.url_for(ipaddress.ip_address("93.184.215.14")) == "https://93.184.215.14:8443/in?a=1"
    assert target.url_for(ipaddress.ip_address("2606:4700::1111")) == "https://[2606:4700::1111]:8443/in?a=1"
    assert target.host_header == "hooks.example.com:8443"
    assert parse_target("http://hooks.example.com/").host_header == "hooks.example.com"


def test_the_default_schedule_spans_a_day_and_ends() -> None:
    schedule = RetrySchedule(Settings().webhook_retry_delays(), jitter=0.0)
    waits = [schedule.wait_after(n) for n in range(1, 9)]
    assert waits[:7] == [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0]
    assert waits[7] is None
    assert 24 * 3600 < sum(w for w in waits if w is not None) < 32 * 3600


def test_waits_vary_within_the_jitter_and_honour_retry_after() -> None:
    schedule = RetrySchedule((100.0, 100.0))
    waits = {schedule.wait_after(1) for _ in range(50)}
    assert all(w is not None and 90.0 <= w <= 110.0 for w in waits)
    assert len(waits) > 1
    assert schedule.wait_after(1, retry_after=600.0) == 600.0
    # A Retry-After above an hour is not waited for.
    wait = schedule.wait_after(2, retry_after=7200.0)
    assert wait is not None and wait <= 110.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("webhook_retry_schedule", "5,x"),
        ("webhook_retry_schedule", "-1"),
        ("webhook_retry_schedule", "inf"),
        ("webhook_allowed_networks", "not-a-cidr"),
        ("webhook_timeout_seconds", 0.0),
        ("webhook_secrets_key", "short"),
        ("webhook_concurrency", 0),
    ],
)
def test_bad_webhook_settings_name_their_variable(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field.upper()):
        overrides: dict[str, Any] = {field: value}
        replace(Settings(), **overrides).validate()


def test_an_international_name_travels_as_its_ascii_form() -> None:
    target = parse_target("https://bücher.example/hook")
    assert (target.host, target.host_header) == ("xn--bcher-kva.example", "xn--bcher-kva.example")
