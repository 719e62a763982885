"""The LLM endpoints a client talks to: keep-alive HTTP/1.1 pools, balanced least-in-flight.

Why our own HTTP/1.1 transport: bench/client.py measured httpx at ~3.4 ms of client CPU per call
at concurrency 64 (its pool and locks, not the network) and a plain asyncio keep-alive client at
~0.2 ms, on a 2-core machine where the LLM server shares the cores. At FRet's hundreds of millions
of calls the client must not be the bottleneck. What an OpenAI-compatible server needs is small:
POST a JSON body, read a Content-Length or chunked JSON answer, keep the connection. It speaks
http and https (the stdlib's TLS); it does not follow redirects or use HTTP(S)_PROXY.

Several endpoints (e.g. a list of vLLM replicas) share the load: each has its own concurrency
limit and idle connections; a call goes to the endpoint with the fewest calls in flight, and a
retry avoids the endpoint that just failed when another has room. An endpoint that refuses
connections is set aside for a cool-down (doubling, up to 30 s) with one warning naming it.
The limit is fixed, or adaptive (concurrency.py): learnt per endpoint from the latency and the
429s/timeouts of its calls, which `release` hands to it.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import json
import logging
import ssl
import time
from urllib.parse import urlsplit

from gecko_factory.llm.concurrency import AdaptiveLimit

log = logging.getLogger(__name__)

USER_AGENT = b"gecko-factory"


class TransportError(Exception):
    """The call did not get an HTTP answer: refused, reset, closed mid-answer (transient)."""


class ConnectFailed(TransportError):
    """No connection at all (refused, no route, DNS): the endpoint is set aside for a while."""


class RequestTimeout(TransportError):
    """No full answer within the timeout (transient)."""


class HTTPStatusError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After), if any


def parse_retry_after(value: str | bytes | None, now: float | None = None) -> float | None:
    """A Retry-After header in seconds: delta-seconds or an HTTP-date (RFC 9110); None if absent
    or unreadable (then the client's own backoff applies)."""
    if value is None:
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class MalformedResponse(ValueError):
    """A 200 whose JSON lacks what an OpenAI answer has (a proxy cut it, a server bug)."""


def split_base_urls(value: str) -> list[str]:
    """'http://a/v1, http://b/v1' -> two URLs; each must be http(s) with a host."""
    urls = [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
    if not urls:
        raise ValueError("no LLM base URL given")
    for u in urls:
        parts = urlsplit(u)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"LLM base URL {u!r} is not an http(s) URL with a host")
    return urls


def public_url(url: str) -> str:
    """The URL without user:password@ (fit for logs and manifests)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


class Endpoint:
    """One base URL: its idle keep-alive connections and its calls in flight."""

    def __init__(self, url: str, limit: int, auth: bytes):
        parts = urlsplit(url)
        self.url = public_url(url)
        self.fixed_limit = limit
        self.limiter: AdaptiveLimit | None = None  # set by the pool when the limit is adaptive
        self.in_flight = 0
        self.calls = 0
        self.host = parts.hostname or ""
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._query = f"?{parts.query}" if parts.query else ""
        self._head = (b"Host: " + self.url.split("://", 1)[1].split("/", 1)[0].encode() +
                      b"\r\nUser-Agent: " + USER_AGENT + b"\r\nAccept: application/json\r\n" + auth)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._ssl = ssl.create_default_context() if self.tls else None
        self.down_until = 0.0
        self._cooldown = 1.0

    @property
    def limit(self) -> int:
        return self.limiter.limit if self.limiter is not None else self.fixed_limit

    def concurrency(self) -> dict:
        """How its limit was set, for the manifest."""
        return self.limiter.summary() if self.limiter is not None else {"mode": "fixed", "limit": self.fixed_limit}

    def is_up(self, now: float) -> bool:
        return now >= self.down_until

    def mark_down(self, reason: str) -> None:
        now = time.monotonic()
        if self.is_up(now):
            log.warning("LLM endpoint %s is unreachable (%s): its calls go elsewhere for %.0fs",
                        self.url, reason, self._cooldown)
        self.down_until = now + self._cooldown
        self._cooldown = min(30.0, self._cooldown * 2)

    def mark_up(self) -> None:
        self._cooldown = 1.0

    async def request(self, method: str, path: str, body: dict | None, timeout: float) -> dict:
        """One HTTP exchange; returns the decoded JSON answer or raises (see the classes above)."""
        data = b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        head = (f"{method} {self._prefix}{path}{self._query} HTTP/1.1\r\n".encode() + self._head +
                (b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data)
                 if body is not None else b"\r\n"))
        try:
            async with asyncio.timeout(timeout):
                status, raw, retry_after = await self._exchange(head + data)
        except TimeoutError:
            raise RequestTimeout(f"no answer within {timeout}s") from None
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            if status >= 400:  # an HTML error page from a proxy: the status says enough
                raise HTTPStatusError(status, raw[:200].decode("utf-8", "replace"), retry_after) from None
            raise
        if status >= 400:
            err = answer.get("error") if isinstance(answer, dict) else None
            message = err.get("message") if isinstance(err, dict) else (err or answer)
            raise HTTPStatusError(status, str(message), retry_after)
        if not isinstance(answer, dict):
            raise MalformedResponse(f"the answer is a {type(answer).__name__}, not a JSON object")
        return answer

    async def _exchange(self, payload: bytes) -> tuple[int, bytes, float | None]:
        # A kept-alive connection may have been closed by the server meanwhile (uvicorn closes
        # idle ones after 5 s): an answerless EOF on a reused connection is retried once on a
        # fresh one, as browsers and httpcore do. The request never reached a handler.
        while self._idle:
            reader, writer = self._idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            try:
                return await self._send(reader, writer, payload)
            except _StaleConnection:
                continue
        try:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self._ssl, server_hostname=self.host if self.tls else None,
                limit=2**20)
        except OSError as exc:
            raise ConnectFailed(f"cannot connect: {exc.strerror or exc}") from None
        try:
            return await self._send(reader, writer, payload)
        except _StaleConnection as exc:
            raise TransportError("the server closed the connection without answering") from exc

    async def _send(self, reader, writer, payload: bytes) -> tuple[int, bytes, float | None]:
        ok = False
        try:
            writer.write(payload)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _StaleConnection() from None
                raise TransportError("the server closed the connection mid-answer") from None
            status, length, chunked, keep, retry_after = _parse_head(head)
            if chunked:
                raw = await _read_chunked(reader)
            elif length is not None:
                raw = await reader.readexactly(length)
            elif status in (204, 304):
                raw = b""
            else:  # no length: the body runs to the end of the connection
                raw, keep = await reader.read(), False
            ok = keep
            return status, raw, retry_after
        except asyncio.IncompleteReadError:
            raise TransportError("the server closed the connection mid-answer") from None
        except ValueError as exc:  # a bad Content-Length or chunk size
            raise TransportError(f"malformed HTTP answer: {exc}") from None
        except (ConnectionError, OSError) as exc:
            raise TransportError(f"connection failed: {exc}") from None
        finally:
            if ok and len(self._idle) < self.limit:
                self._idle.append((reader, writer))
            else:  # cancelled (timeout), failed, or not reusable: never hand it out again
                writer.close()

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class _StaleConnection(Exception):
    pass


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool, float | None]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise TransportError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    status = int(parts[1])
    keep = parts[0] == b"HTTP/1.1"
    length, chunked, retry_after = None, False, None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            v = value.strip().lower()
            keep = v == b"keep-alive" if not keep else v != b"close"
        elif name == b"retry-after":
            retry_after = parse_retry_after(value)
    return status, length, chunked, keep, retry_after


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


class EndpointPool:
    """Endpoints sharing the load; `acquire` waits until one has room under its own limit."""

    def __init__(self, urls: list[str], limit: int, api_key: str | None, transport: str = "fast",
                 adaptive: bool = False):
        if transport == "openai":  # proxies/redirects via the openai package (openai_transport.py)
            from gecko_factory.llm.openai_transport import OpenAIEndpoint

            self.endpoints: list[Endpoint] = [OpenAIEndpoint(u, limit, api_key) for u in urls]
        else:
            auth = f"Authorization: Bearer {api_key}\r\n".encode() if api_key else b""
            self.endpoints = [Endpoint(u, limit, auth) for u in urls]
        if adaptive:  # `limit` is where each endpoint's own limit starts
            for e in self.endpoints:
                e.limiter = AdaptiveLimit(limit, name=e.url)
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    def __repr__(self) -> str:  # never the auth header
        return f"EndpointPool({[e.url for e in self.endpoints]})"

    def _pick(self, avoid: Endpoint | None) -> Endpoint | None:
        now = time.monotonic()
        free = [e for e in self.endpoints if e.in_flight < e.limit]
        up = [e for e in free if e.is_up(now)]
        if not any(e.is_up(now) for e in self.endpoints):
            up = free  # all set aside: try anyway, so the caller sees the real error
        choice = [e for e in up if e is not avoid] or up
        return min(choice, key=lambda e: e.in_flight) if choice else None

    async def acquire(self, avoid: Endpoint | None = None) -> Endpoint:
        # First come, first served: while others wait, a newcomer queues behind them.
        ep = None if self._waiters else self._pick(avoid)
        requeue = False
        while ep is None:
            fut = asyncio.get_running_loop().create_future()
            (self._waiters.appendleft if requeue else self._waiters.append)(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.cancelled():
                    if fut in self._waiters:  # _wake may have dropped it already
                        self._waiters.remove(fut)
                else:
                    self._wake()  # we were handed a slot: pass it on
                raise
            ep, requeue = self._pick(avoid), True
        ep.in_flight += 1
        ep.calls += 1
        if self._waiters and self._pick(None) is not None:
            self._wake()  # room left (an endpoint came back): the next waiter need not wait
        return ep

    def release(self, ep: Endpoint, ticket: int = 0, started: float | None = None, overload: bool = False) -> None:
        """The call on `ep` is over. For an adaptive limit: `ticket`, `ep.calls` right after its
        acquire (its admission number); `started` (time.monotonic() when it was sent) for a call
        that says something about the endpoint's capacity: it answered (its round trip counts) or
        it was refused as overloaded (429/503/timeout); None for one that says nothing (refused
        connection, a 500, cancelled). A limit that grew lets more waiters through (see acquire)."""
        if ep.limiter is not None and ticket:
            rtt = None if started is None else time.monotonic() - started
            ep.limiter.on_sample(ticket, rtt, overload, ep.in_flight, ep.calls)
        ep.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def other_up(self, ep: Endpoint) -> bool:
        now = time.monotonic()
        return any(e is not ep and e.is_up(now) for e in self.endpoints)

    def concurrency(self) -> dict[str, dict]:
        """Each endpoint's limit: fixed, or adaptive with where it started, ended and peaked."""
        return {e.url: e.concurrency() for e in self.endpoints}

    def close(self) -> None:
        for e in self.endpoints:
            e.close()
