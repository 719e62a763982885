"""Run the embedded llama.cpp server (gecko_factory.llm.server_app) as a child process.

A subprocess rather than an in-process server: llama.cpp holds the GIL-free C state of two
contexts and would compete with the flow's own threads; a separate process also dies cleanly
with its memory, and is what a remote OpenAI-compatible endpoint looks like to the client.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from gecko_factory.llm.settings import LLMSettings
from gecko_factory.paths import gecko_home

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0
class EmbeddedServerError(RuntimeError):
    """The embedded server could not be started."""


def free_port() -> int:
    # Bind port 0 so the kernel picks a free one; a tiny race until the child binds it is
    # acceptable on a loopback address.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return "\n".join(lines[-n:])


class EmbeddedServer:
    """Context manager: `with EmbeddedServer(settings) as srv: OpenAI(base_url=srv.base_url)`."""

    def __init__(self, settings: LLMSettings, model_path: Path | None = None,
                 prefix_chunk: int | None = None):
        self.settings = settings
        self.model_path = model_path
        self.prefix_chunk = prefix_chunk  # None: the server's default; 0: no prefix cache
        # The embedded server serves exactly one model; a user-set GECKO_LLM_MODEL is only
        # meaningful for a remote endpoint, so the name here is always the embedded one.
        self.model_name = settings.embedded_model
        self.port: int | None = None
        self.base_url: str | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._log_fh = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (bench/embedded.py reads its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        if self._proc is not None:
            return
        if importlib.util.find_spec("llama_cpp") is None:
            raise EmbeddedServerError(
                "llama-cpp-python is not installed, so the embedded LLM cannot run. "
                "Run `make setup` (it builds llama-cpp-python with portable CPU flags; see "
                "README), or point GECKO_LLM_BASE_URL / OPENAI_BASE_URL at an OpenAI-compatible "
                "server."
            )
        from gecko_factory.llm.model_files import ensure_model

        if self.model_path is None:
            self.model_path = ensure_model(self.model_name)
        # (path, name) of every model served: the generator first, then a separate judge
        served = [(self.model_path, self.model_name)]
        judge = self.settings.judge_model
        if judge and judge != self.model_name:
            served.append((ensure_model(judge), judge))
        self.port = free_port()
        logs = gecko_home() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"embedded-llm-{time.strftime('%Y%m%d-%H%M%S')}-{self.port}.log"
        threads = self.settings.embedded_threads or os.cpu_count() or 1
        cmd = [
            sys.executable, "-m", "gecko_factory.llm.server_app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--threads", str(threads), "--ctx", str(self.settings.embedded_ctx),
            "--parent-pid", str(os.getpid()),
        ]
        for path, name in served:
            cmd += ["--model", str(path), "--model-name", name]
        if self.prefix_chunk is not None:
            cmd += ["--prefix-chunk", str(self.prefix_chunk)]
        log.info("starting embedded LLM server on port %d (log: %s)", self.port, self.log_path)
        self._log_fh = self.log_path.open("ab")
        # Its own session: a Ctrl-C in the terminal reaches the whole foreground group, and a
        # server that died with it would turn the run's orderly stop into connection errors and
        # outage retries. The run stops it on the way out (stop, atexit); on a kill -9 it leaves
        # by itself (server_app.exit_with_parent) and the orphan reaper is there too.
        self._proc = subprocess.Popen(cmd, stdout=self._log_fh, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        atexit.register(self.stop)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None and self.log_path is not None
        health = f"http://127.0.0.1:{self.port}/health"
        t0 = time.monotonic()
        while time.monotonic() - t0 < READY_TIMEOUT_S:
            if self._proc.poll() is not None:
                raise EmbeddedServerError(
                    f"embedded LLM server exited with code {self._proc.returncode}; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                if httpx.get(health, timeout=2.0).status_code == 200:
                    log.info("embedded LLM server ready in %.1f s", time.monotonic() - t0)
                    return
            except httpx.TransportError:
                pass  # not listening yet: the model is still loading
            time.sleep(0.25)
        raise EmbeddedServerError(
            f"embedded LLM server not ready after {READY_TIMEOUT_S:.0f} s; "
            f"log {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("embedded LLM server ignored SIGTERM; killing it")
                proc.kill()
                proc.wait(timeout=10)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        atexit.unregister(self.stop)
