"""Start the scripted OpenAI-compatible server in a subprocess on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptedServer:
    """`with ScriptedServer(latency_ms=50) as srv: srv.base_url` — stopped on exit."""

    def __init__(self, latency_ms: float = 0.0, startup_timeout_s: float = 30.0):
        self.latency_ms = latency_ms
        self.timeout = startup_timeout_s
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "ScriptedServer":
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gecko_factory.testing.scripted_server",
             "--port", str(self.port), "--latency-ms", str(self.latency_ms)],
        )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"scripted server exited with {self._proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise TimeoutError(f"scripted server not ready after {self.timeout}s")

    def stats(self) -> dict[str, int]:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()

    def __exit__(self, *exc) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
