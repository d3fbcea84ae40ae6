"""Resident memory of `crm-bulk import` while it uploads a large file: the body is streamed from the file.

    .venv/bin/python benchmarks/cli_upload_memory.py                 # a 1 GB CSV
    .venv/bin/python benchmarks/cli_upload_memory.py --size-mb 200

A CSV of `--size-mb` megabytes is written to a temporary folder, then uploaded by the real client
(`python -m crm_bulk.cli import FILE --no-wait --json`, a subprocess, its upload bar drawn on a terminal-less
stderr) to a local HTTP endpoint that reads every byte of the body and answers 202 with a queued job, as
`POST /bulk-actions/import` does once a body has been stored. The endpoint stands in for the API so that what
is measured is the client alone, whatever the server does with a gigabyte of rows. The client's peak resident
set size and the bytes the endpoint received are printed. The peak is the kernel's `VmHWM` of the client's
process (/proc/<pid>/status), read every 20 ms until it exits: `ru_maxrss` would not do, since Linux carries
the forking parent's high-water mark over into the child's across exec.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import uvicorn

ROOT = Path(__file__).resolve().parents[1]
ROW = "user{i}@example.com,First{i},Last{i},+1212555{j:04d},Acme Corporation {k},Engineer\n"


def write_csv(path: Path, size: int) -> int:
    """A CSV of about `size` bytes (whole rows); returns its size."""
    with path.open("w") as out:
        out.write("email,first_name,last_name,phone,company,job_title\n")
        written, i = 0, 0
        while written < size:
            block = "".join(ROW.format(i=n, j=n % 10_000, k=n % 97) for n in range(i, i + 10_000))
            out.write(block)
            written += len(block)
            i += 10_000
    return path.stat().st_size


class PeakSampler:
    """The highest `VmHWM` (peak resident set, MB) of a running process, read every 20 ms until it ends."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while True:
            try:
                text = status.read_text()
            except OSError:
                return  # the process has ended (and been reaped)
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
            if "State:\tZ" in text:
                return
            time.sleep(0.02)

    def wait(self) -> float:
        """The peak, once the process has ended."""
        self._thread.join()
        return self.peak_mb


class Sink:
    """An ASGI endpoint that drains request bodies and answers like an accepted import."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            self.received += len(message.get("body", b""))
            more = message.get("more_body", False)
        job = {"id": str(uuid.uuid4()), "action": "import", "status": "queued", "total": 0}
        body = json.dumps(job).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def measure(size_mb: int) -> None:
    """Write the file, upload it through the client, print the client's peak RSS."""
    sink = Sink()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "contacts.csv"
        size = write_csv(source, size_mb * 1_000_000)
        config = uvicorn.Config(sink, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        env = os.environ | {
            "CRM_BULK_API_URL": f"http://127.0.0.1:{port}",
            "CRM_BULK_TOKEN": "unused-by-the-endpoint",
            "PYTHONPATH": str(ROOT / "python"),
        }
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "crm_bulk.cli", "import", str(source), "--no-wait", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        sampler = PeakSampler(child.pid)
        # waitid(WNOWAIT) leaves the ended child a zombie, so the sampler reads its last VmHWM first.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        seconds = time.perf_counter() - started
        peak_mb = sampler.wait()
        status = child.wait()
        server.should_exit = True
        thread.join(10)
        assert child.stdout is not None
        answer = json.loads(child.stdout.read())
    assert status == 0, status
    assert sink.received == size, (sink.received, size)
    print(
        f"{size / 1e6:.0f} MB uploaded in {seconds:.1f} s ({size / 1e6 / seconds:.0f} MB/s), job "
        f"{answer['status']}; the client's peak resident set (VmHWM): {peak_mb:.1f} MB"
    )


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=1000, help="File size in MB (default 1000)")
    measure(parser.parse_args().size_mb)


if __name__ == "__main__":
    main()
