"""An OpenAI-compatible server with a capacity knee, for the adaptive-concurrency test and benchmark.

It serves `capacity` (C) requests at a time, each for a fixed `service_ms`: up to C in flight
every request takes the service time, beyond C they queue (first come, first served), so the
throughput stays flat at C / service time while the latency grows; beyond 2C in flight a
request is refused at once with 429, as a rate-limited API or a full vLLM queue does. The best
fixed concurrency is therefore anywhere in [C, 2C], and a client that is not told C must find it.

Plain asyncio streams and a canned chat answer, not Starlette (scripted_server.py): at
thousands of calls a second on 2 cores the server's own CPU per request would otherwise be the
ceiling, and the knee would not be measured. `GET /stats`: requests, ok, 429s, and the most
requests it held at once and served at once.

    python -m gecko_factory.testing.knee_server --port P --capacity 64 --service-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request

_CHAT = json.dumps({
    "id": "chatcmpl-knee", "object": "chat.completion", "created": 0, "model": "knee",
    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "Yes"}}]}).encode()
_BUSY = b'{"error": {"message": "too many requests in flight", "type": "rate_limit"}}'
_MODELS = b'{"object": "list", "data": [{"id": "knee", "object": "model"}]}'


def _answer(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body)) + body


class Knee:
    def __init__(self, capacity: int, service_ms: float):
        self.capacity, self.service_s = capacity, service_ms / 1000
        self._slots = asyncio.Semaphore(capacity)  # FIFO: queued requests are served in order
        self.in_flight = self.in_service = 0
        self.stats = {"requests": 0, "ok": 0, "429": 0, "max_in_flight": 0, "max_in_service": 0}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                path = head.split(b" ", 2)[1]
                if path.startswith(b"/stats"):
                    writer.write(_answer(b"200 OK", json.dumps(self.stats).encode()))
                elif path.endswith(b"/models"):
                    writer.write(_answer(b"200 OK", _MODELS))
                else:
                    writer.write(await self._serve())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its keep-alive connection
        finally:
            writer.close()

    async def _serve(self) -> bytes:
        s = self.stats
        s["requests"] += 1
        if self.in_flight >= 2 * self.capacity:
            s["429"] += 1
            return _answer(b"429 Too Many Requests", _BUSY)
        self.in_flight += 1
        s["max_in_flight"] = max(s["max_in_flight"], self.in_flight)
        try:
            async with self._slots:
                self.in_service += 1
                s["max_in_service"] = max(s["max_in_service"], self.in_service)
                try:
                    await asyncio.sleep(self.service_s)
                finally:
                    self.in_service -= 1
        finally:
            self.in_flight -= 1
        s["ok"] += 1
        return _answer(b"200 OK", _CHAT)


async def serve(port: int, capacity: int, service_ms: float) -> None:
    knee = Knee(capacity, service_ms)
    server = await asyncio.start_server(knee.handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


class KneeServer:
    """`with KneeServer(capacity=16, service_ms=20) as srv: srv.base_url` — a subprocess, stopped on exit."""

    def __init__(self, capacity: int, service_ms: float = 20.0):
        from gecko_factory.llm.embedded import free_port  # not in the server process: stdlib only there

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._args = ["--capacity", str(capacity), "--service-ms", str(service_ms)]
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "KneeServer":
        self._proc = subprocess.Popen([sys.executable, "-m", "gecko_factory.testing.knee_server",
                                       "--port", str(self.port), *self._args])
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("the knee server did not start") from None
                time.sleep(0.05)

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as r:
            return json.loads(r.read())

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--capacity", type=int, required=True, help="C: requests served at once")
    ap.add_argument("--service-ms", type=float, default=20.0, help="each request's service time")
    args = ap.parse_args()
    asyncio.run(serve(args.port, args.capacity, args.service_ms))


if __name__ == "__main__":
    main()
