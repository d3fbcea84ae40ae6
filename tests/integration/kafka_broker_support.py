"""A Kafka broker of a test's own (scripts/kafka.sh on its own ports and state folder), for tests that restart
the broker: the shared test broker is never restarted. The broker jars are the shared broker's (linked, not
resolved again)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.server_support import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class OwnBroker:
    """A running broker of this test's own; `restart` keeps its data."""

    port: int
    state: Path

    @property
    def bootstrap(self) -> str:
        """`host:port` of the broker."""
        return f"127.0.0.1:{self.port}"

    def run(self, action: str, *, timeout: float = 180.0) -> None:
        """`scripts/kafka.sh <action>` for this broker (`start`, `stop`, `restart`, `status`)."""
        env = dict(os.environ) | {"KAFKA_PORT": str(self.port), "STATE": str(self.state)}
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "kafka.sh"), action], env=env, check=True, timeout=timeout
        )


def _free_port_pair() -> int:
    """A port whose next port is free too (the broker's controller listens there)."""
    for _ in range(50):
        port = free_port()
        try:
            import socket

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise AssertionError("no free pair of ports for a broker")


@contextmanager
def own_broker() -> Iterator[OwnBroker]:
    """A started broker on free ports with data in a temporary folder, stopped and removed at the end."""
    shared = ROOT / ".services" / "kafka"
    if not (shared / "lib").is_dir():
        raise AssertionError(f"no broker jars in {shared}/lib: start the services with scripts/services.sh")
    state = Path(tempfile.mkdtemp(prefix="crm-bulk-kafka-"))
    (state / "kafka").mkdir()
    (state / "kafka" / "lib").symlink_to(shared / "lib")
    shutil.copy(shared / "lib.stamp", state / "kafka" / "lib.stamp")
    broker = OwnBroker(port=_free_port_pair(), state=state)
    broker.run("start")
    try:
        yield broker
    finally:
        try:
            broker.run("stop")
        finally:
            shutil.rmtree(state, ignore_errors=True)
