"""`crm-bulk worker --processes N`: a supervisor and N worker processes, one queue consumer each, one group.

The supervisor spawns the processes (fresh interpreters: no client or connection crosses a fork), restarts
one that dies (backing off if it keeps dying young), serves the pool's Prometheus metrics, and on
SIGTERM/SIGINT tells every worker to drain — finish the chunk in hand, commit, leave the group — killing
only those still busy after `drain_timeout`. A worker whose supervisor dies (SIGKILLed, say) drains the same
way on its own (`crm_bulk.orphan`), so none goes on consuming beside the next supervisor's. In burst mode each
worker exits once the queue stays empty and the supervisor returns when all have.

With a ClickHouse server (an http(s) DSN) every worker process also runs the log shipper; with chDB the
process that owns the chDB store (the API) ships, and workers never open it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from prometheus_client import Counter

from crm_bulk import orphan
from crm_bulk.process_health import Heartbeat, serve_process_health
from crm_bulk.settings import Settings
from crm_bulk.worker import metrics

log = logging.getLogger(__name__)

# A worker that dies sooner than this after starting counts as crashing young: back off before the next start.
YOUNG_DEATH_SECONDS = 10.0
MAX_RESTART_DELAY = 30.0
# The supervisor loop ticks every 0.2 s; one that has not for this long is stuck (`/healthz` answers 503).
LOOP_MAX_AGE_SECONDS = 30.0


@dataclass
class _Slot:
    number: int
    process: BaseProcess | None = None
    started_at: float = 0.0
    next_start: float = 0.0
    young_deaths: int = 0
    finished: bool = False
    restarts: int = 0


def worker_process_main(settings: Settings, slot: int, burst: bool) -> None:
    """Entry point of one worker process (spawned): consume until SIGTERM/SIGINT (or, in burst mode, idle)."""
    from crm_bulk.queue import open_consumer
    from crm_bulk.ratelimit import limiter_from_settings
    from crm_bulk.retry import RetryPolicy
    from crm_bulk.worker.chunk_worker import ChunkWorker
    from crm_bulk.worker.ledger_access import PostgresWorkerLedger
    from crm_bulk.worker.pacing import EntityPacer

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s",
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("worker %d received %s, draining", slot, signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    _drain_when_orphaned(slot, stop)
    name = f"{socket.gethostname()}:{os.getpid()}:w{slot}"
    consumer = open_consumer(settings, client_id=name)
    pacer = EntityPacer(limiter_from_settings(settings), namespace=settings.namespace, stop=stop)
    worker = ChunkWorker(
        name=name,
        ledger=PostgresWorkerLedger(settings.postgres_dsn),
        consumer=consumer,
        pacer=pacer,
        policy=RetryPolicy.from_settings(settings),
        stop=stop,
        poison_delivery_cap=settings.poison_delivery_cap,
    )
    shipper = _start_shipper(settings, stop)
    try:
        worker.run(burst=burst)
    finally:
        stop.set()
        consumer.close()
        if shipper is not None:
            shipper.join(timeout=30)


def _drain_when_orphaned(slot: int, stop: threading.Event) -> None:
    """Drain as on SIGTERM once the supervisor is gone (SIGKILLed), rather than go on consuming beside the
    workers of the next supervisor.

    The supervisor loop spawns every worker from one thread that outlives them, so the kernel's parent-death
    signal fits; the parent-pid watch covers other platforms and a supervisor that died before the request.
    """

    def orphaned() -> None:
        if not stop.is_set():
            log.warning("worker %d: the supervisor is gone, draining", slot)
            stop.set()

    orphan.request_death_signal(signal.SIGTERM)
    orphan.watch_parent(orphaned, stop=stop)


def ships_from_workers(settings: Settings) -> bool:
    """True when ClickHouse is a server (workers ship); False for chDB (its owning process ships)."""
    return not settings.clickhouse_embedded


def _start_shipper(settings: Settings, stop: threading.Event) -> threading.Thread | None:
    if not ships_from_workers(settings):
        return None
    from crm_bulk.entitylog.shipper import run_shipper

    thread = threading.Thread(
        target=run_shipper,
        args=(settings, stop),
        name="crm-bulk-shipper",
        daemon=True,
    )
    thread.start()
    return thread


def run_worker_pool(
    settings: Settings,
    processes: int,
    *,
    burst: bool = False,
    stop_event: threading.Event | None = None,
    drain_timeout: float = 120.0,
) -> int:
    """Supervise `processes` workers until SIGTERM/SIGINT (or `stop_event`, or, with `burst`, until every
    worker found the queue empty). Returns the exit code: 0.

    `settings` are resolved (`crm_bulk.deployment.running_database`); `stop_event` replaces signal handling
    (embedding, tests).
    """
    if processes < 1:
        raise ValueError("processes must be at least 1")
    from crm_bulk.queue import wait_for_queue

    stop = stop_event or threading.Event()
    restore = _install_signal_handlers(stop) if stop_event is None else {}
    # The endpoint is up while the queue is being set up, so probes see a live, not yet ready, pool.
    heartbeat = Heartbeat(max_age_seconds=LOOP_MAX_AGE_SECONDS)
    with _pool_endpoint(settings, heartbeat) as restarts:
        try:
            if wait_for_queue(settings, stop):
                _supervise(
                    settings,
                    processes,
                    burst=burst,
                    stop=stop,
                    drain_timeout=drain_timeout,
                    heartbeat=heartbeat,
                    restarts=restarts,
                )
        finally:
            for signum, handler in restore.items():
                signal.signal(signum, handler)
    return 0


@contextmanager
def _pool_endpoint(settings: Settings, heartbeat: Heartbeat) -> Iterator[Counter]:
    """The pool's HTTP endpoint (metrics summed over the worker processes, `/healthz`, `/readyz`) for the
    duration; yields the supervisor's restarts counter it serves."""
    metrics_dir = tempfile.mkdtemp(prefix="crm-bulk-metrics-") if settings.worker_metrics_port else None
    previous_env = os.environ.get(metrics.MULTIPROC_ENV)
    if metrics_dir is not None:
        # Read by prometheus_client when the spawned workers import it.
        os.environ[metrics.MULTIPROC_ENV] = metrics_dir
    restarts = metrics.restarts_counter()
    endpoint = None
    if metrics_dir is not None:
        endpoint = serve_process_health(
            settings,
            heartbeat,
            port=settings.worker_metrics_port,
            name="worker pool endpoint",
            fallback=metrics.metrics_app(multiprocess_dir=metrics_dir, extra=[restarts]),
        )
    try:
        yield restarts
    finally:
        if endpoint is not None:
            endpoint.stop()
        if metrics_dir is not None:
            if previous_env is None:
                os.environ.pop(metrics.MULTIPROC_ENV, None)
            else:
                os.environ[metrics.MULTIPROC_ENV] = previous_env
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(
    settings: Settings,
    processes: int,
    *,
    burst: bool,
    stop: threading.Event,
    drain_timeout: float,
    heartbeat: Heartbeat,
    restarts: Counter,
) -> None:
    """Keep `processes` workers alive until `stop` (or the end of a burst), then drain them."""
    ctx = multiprocessing.get_context("spawn")
    slots = [_Slot(number=n) for n in range(processes)]
    log.info(
        "worker pool: %d processes, queue %s%s", processes, settings.queue_kind, ", burst" if burst else ""
    )
    try:
        while not stop.is_set():
            now = time.monotonic()
            for slot in slots:
                _tend(ctx, slot, settings=settings, burst=burst, now=now, restarts=restarts)
            heartbeat.beat()
            if burst and all(s.finished for s in slots):
                break
            stop.wait(0.2)
    finally:
        _drain(slots, drain_timeout)
    log.info("worker pool stopped; restarts per slot: %s", {s.number: s.restarts for s in slots})


def _tend(
    ctx: multiprocessing.context.SpawnContext,
    slot: _Slot,
    *,
    settings: Settings,
    burst: bool,
    now: float,
    restarts: Counter,
) -> None:
    """Start a slot's process when due; notice one that died and schedule its restart."""
    if slot.finished:
        return
    proc = slot.process
    if proc is None:
        if now >= slot.next_start:
            proc = ctx.Process(
                target=worker_process_main,
                args=(settings, slot.number, burst),
                name=f"crm-bulk-worker-{slot.number}",
            )
            proc.start()
            slot.process, slot.started_at = proc, now
            log.info("worker %d started (pid %s)", slot.number, proc.pid)
        return
    if proc.is_alive():
        return
    code = proc.exitcode
    if proc.pid is not None:
        metrics.forget_process(proc.pid)
    slot.process = None
    if burst and code == 0:
        slot.finished = True
        log.info("worker %d finished its burst", slot.number)
        return
    lived = now - slot.started_at
    slot.young_deaths = slot.young_deaths + 1 if lived < YOUNG_DEATH_SECONDS else 0
    delay = min(MAX_RESTART_DELAY, 0.5 * 2**slot.young_deaths) if slot.young_deaths else 0.0
    slot.next_start = now + delay
    slot.restarts += 1
    restarts.inc()
    log.error(
        "worker %d (pid %s) died with exit code %s after %.1f s; restarting in %.1f s",
        slot.number,
        proc.pid,
        code,
        lived,
        delay,
    )


def _drain(slots: list[_Slot], timeout: float) -> None:
    """SIGTERM every live worker, wait up to `timeout` for all, then SIGKILL the rest."""
    live = [s.process for s in slots if s.process is not None and s.process.is_alive()]
    for proc in live:
        if proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in live:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            log.error("worker pid %s did not drain within %.0f s; killing it", proc.pid, timeout)
            proc.kill()
            proc.join(10)


def _install_signal_handlers(stop: threading.Event) -> dict[signal.Signals, Any]:
    """SIGTERM and SIGINT set `stop`; returns the previous handlers (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("supervisor received %s: draining workers", signal.Signals(signum).name)
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    return previous
