"""docker-compose.yml and the Dockerfile agree with the code: real settings, wired backends, existing stages.

No Docker engine is needed: the files are parsed and checked against `crm_bulk.settings` and `crm_bulk.cli`.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from crm_bulk.cli import main as cli_main
from crm_bulk.settings import Settings, documented_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# Values for variables the compose file requires from the caller (`${VAR:?message}`).
CALLER_ENV = {"CRM_BULK_JWT_SECRET": "compose-test-secret-" + "x" * 32}

# Each backend URL setting, and the image (name prefix) of the compose service its host must name.
BACKEND_URLS = {
    "CRM_BULK_DATABASE_URL": "postgres:",
    "CRM_BULK_QUEUE_URL": "apache/kafka:",
    "CRM_BULK_CLICKHOUSE_URL": "clickhouse/clickhouse-server:",
    "CRM_BULK_REDIS_URL": "redis:",
}

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR?err}` and `$$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op is not None and op.endswith("?") and unset:
            raise AssertionError(f"${{{name}}} is required by docker-compose.yml: {arg}")
        if op is not None and op.endswith("-") and unset:
            return arg
        return current or ""

    return _VARIABLE.sub(replace, value)


def load_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# Services built from this repository's Dockerfile run crm-bulk; the others are backends from images.
APP_SERVICES = sorted(name for name, spec in SERVICES.items() if "build" in spec)


def environment(service: str) -> dict[str, str]:
    """The service's environment after interpolation, whether written as a mapping or a list."""
    raw = SERVICES[service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): interpolate(str(v), CALLER_ENV) for k, v in raw.items()}


def depends_on(service: str) -> dict[str, str]:
    """{dependency: condition}; the short list form means `service_started`."""
    raw = SERVICES[service].get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in raw.items()}


def url_hosts(url: str) -> list[str | None]:
    """The host names of a URL, including each host of a `kafka://h1:p,h2:p` list."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    return [urlsplit(f"//{hostport}").hostname for hostport in netloc.split(",")]


def dockerfile_stages() -> dict[str, list[str]]:
    """{stage name: its instruction lines}, with `ARG` defaults declared before the first FROM applied."""
    args: dict[str, str] = {}
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if current is None and line.upper().startswith("ARG "):
            name, _, default = line[4:].partition("=")
            args[name.strip()] = default.strip()
            continue
        found = re.match(r"FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$", line, flags=re.IGNORECASE)
        if found:
            image = interpolate(found.group(1), args)
            current = [f"FROM {image}"]
            stages[found.group(2) or f"stage-{len(stages)}"] = current
        elif current is not None:
            current.append(line)
    return stages


def test_compose_has_the_scale_out_services() -> None:
    assert {"postgres", "kafka", "clickhouse", "redis"} <= SERVICES.keys()
    assert {"api", "worker", "scheduler"} <= set(APP_SERVICES)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_crm_bulk_variable_is_a_real_setting(service: str) -> None:
    known = {name for name, _default, _doc in documented_settings()}
    unknown = sorted(
        name for name in environment(service) if name.startswith("CRM_BULK_") and name not in known
    )
    assert unknown == [], f"service {service!r} sets variables crm_bulk.settings does not know: {unknown}"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_service_environment_is_valid_scale_out_settings(service: str) -> None:
    env = environment(service)
    # An unset backend URL silently means the embedded backend, so each process needs all of them.
    missing = sorted(set(BACKEND_URLS) - env.keys())
    assert missing == [], f"service {service!r} would fall back to embedded backends for {missing}"
    settings = Settings.from_env(env)
    assert not settings.embedded_database
    assert settings.queue_kind == "kafka"
    assert settings.clickhouse_dsn.startswith(("http://", "https://"))
    assert settings.redis_url is not None


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_service_depends_on_the_backends_its_urls_name(service: str) -> None:
    env = environment(service)
    conditions = depends_on(service)
    for variable, image_prefix in BACKEND_URLS.items():
        if variable not in env:
            continue
        for host in url_hosts(env[variable]):
            assert host in SERVICES, (
                f"{service}: {variable} names host {host!r}, which is not a compose service"
            )
            assert str(SERVICES[host]["image"]).startswith(image_prefix), f"{service}: {variable} -> {host}"
            assert conditions.get(host) == "service_healthy", (
                f"{service} uses {host} through {variable} but does not wait for it to be healthy"
            )
            assert "healthcheck" in SERVICES[host], f"{host} has no healthcheck to wait for"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_dependencies_exist_and_one_shots_do_not_restart(service: str) -> None:
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for dependency, condition in depends_on(service).items():
        assert dependency in SERVICES, f"{service} depends on unknown service {dependency!r}"
        assert condition in allowed
        if condition == "service_healthy":
            assert "healthcheck" in SERVICES[dependency]
        if condition == "service_completed_successfully":
            assert SERVICES[dependency].get("restart", "no") == "no"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_service_command_is_a_crm_bulk_subcommand(service: str) -> None:
    command = SERVICES[service]["command"]
    assert isinstance(command, list) and command[0] == "crm-bulk", command
    name, *args = command[1:]
    assert isinstance(cli_main, click.Group)
    subcommand = cli_main.commands.get(name)
    assert subcommand is not None, f"{service}: `crm-bulk {name}` is not a command of crm_bulk.cli"
    # Parsing without invoking proves every option and argument exists.
    subcommand.make_context(f"crm-bulk {name}", list(args))


def test_kafka_service_is_kraft_and_advertises_the_queue_url() -> None:
    kafka = environment("kafka")
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    try:
        cluster_id = base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")
    except binascii.Error as exc:
        raise AssertionError(f"CLUSTER_ID is not base64url: {exc}") from None
    assert len(cluster_id) == 16, "a KRaft cluster id is 16 bytes, base64url without padding"
    advertised = {urlsplit(item).netloc for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for service in APP_SERVICES:
        queue = environment(service)["CRM_BULK_QUEUE_URL"].removeprefix("kafka://")
        assert set(queue.split(",")) <= advertised, (
            f"{service} bootstraps from {queue}, kafka advertises {advertised}"
        )


def test_dockerfile_builds_the_wheel_with_maturin_and_installs_it_on_python_slim() -> None:
    stages = dockerfile_stages()
    assert {"builder", "runtime"} <= stages.keys()
    builder, runtime = "\n".join(stages["builder"]), "\n".join(stages["runtime"])
    assert "maturin build" in builder
    assert (
        re.search(r"^COPY\s+(--from=\S+\s+)?/usr/local/cargo", builder, flags=re.MULTILINE)
        or "rustup" in builder
    )
    assert stages["runtime"][0] == "FROM python:3.11-slim"
    assert re.search(r"^COPY\s+--from=builder\s", runtime, flags=re.MULTILINE)
    assert re.search(r"^RUN\s+pip install\s+\S*\.whl", runtime, flags=re.MULTILINE)
    assert "maturin" not in runtime and "cargo" not in runtime
    assert list(stages)[-1] == "runtime", "a plain `docker build .` must produce the runtime image"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_service_builds_an_existing_stage(service: str) -> None:
    build = SERVICES[service]["build"]
    assert (ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    assert build.get("target", "runtime") in dockerfile_stages()


def test_dockerignore_keeps_the_build_inputs() -> None:
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for needed in ("pyproject.toml", "Cargo.toml", "Cargo.lock", "README.md", "rust", "python"):
        assert needed not in patterns and f"{needed}/" not in patterns, f".dockerignore drops {needed}"
    assert ".venv" in patterns and "target" in patterns


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET:-d}-${EMPTY:-e}-${EMPTY-f}-$$x", env) == "v-d-e--$x"
    with pytest.raises(AssertionError, match="needed"):
        interpolate("${UNSET:?needed}", env)
