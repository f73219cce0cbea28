"""The review app as a real server: `python -m eval.review ...` in a subprocess, uvicorn on a free port."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    output: list[str] = field(default_factory=list)  # stdout and stderr lines so far

    def printed(self, text: str) -> list[str]:
        return [line for line in self.output if text in line]

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flush, exactly a crash."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def _collect(stream, output: list[str]) -> None:
    for line in stream:
        output.append(line.rstrip("\n"))


@contextmanager
def review_server(*args: str) -> Iterator[RunningServer]:
    """Start `python -m eval.review ARGS --port FREE` and wait until it answers /login."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "eval.review", *args, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    server = RunningServer(f"http://127.0.0.1:{port}", process)
    reader = threading.Thread(target=_collect, args=(process.stdout, server.output), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"eval.review {' '.join(args)} exited {process.returncode}:\n"
                                   + "\n".join(server.output[-30:]))
            try:
                if httpx.get(f"{server.url}/login", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the review server did not start:\n" + "\n".join(server.output[-30:]))
            time.sleep(0.3)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(timeout=5)
