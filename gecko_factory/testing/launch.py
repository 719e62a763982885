"""Start the scripted OpenAI-compatible server in a subprocess on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from gecko_factory.llm.embedded import free_port  # noqa: F401 - re-exported for tests


class ScriptedServer:
    """`with ScriptedServer(latency_ms=50) as srv: srv.base_url` — stopped on exit."""

    def __init__(self, latency_ms: float = 0.0, startup_timeout_s: float = 30.0,
                 fault_rate: float = 0.0, fault_seed: int = 0, fault_sleep_s: float = 3.0,
                 prompt_logprobs: bool = True, keep_alive_s: float = 5.0, prompt_lists: bool = True):
        self.latency_ms = latency_ms
        self.fault_args = ["--fault-rate", str(fault_rate), "--fault-seed", str(fault_seed),
                           "--fault-sleep-s", str(fault_sleep_s)]
        if not prompt_logprobs:
            self.fault_args.append("--no-prompt-logprobs")
        if not prompt_lists:
            self.fault_args.append("--no-prompt-lists")
        self.fault_args += ["--keep-alive-s", str(keep_alive_s)]
        self.timeout = startup_timeout_s
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def start(self) -> "ScriptedServer":
        """Start (or, after `stop`, restart) the server on its port: an outage the test controls."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "gecko_factory.testing.scripted_server",
             "--port", str(self.port), "--latency-ms", str(self.latency_ms), *self.fault_args],
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
        """Requests by endpoint ("chat", "completions"), faults, and bad synthesis answers."""
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=5).json()

    def calls(self) -> int:
        s = self.stats()
        return s.get("chat", 0) + s.get("completions", 0)

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server process; the port is free again (its counters start over on `start`)."""
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
