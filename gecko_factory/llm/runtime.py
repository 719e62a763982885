"""One event loop and one LLM client per process, shared by every shard running in it.

Shards run in Prefect's worker threads; if each ran its own event loop with its own client, the
concurrency limit would multiply by the number of shards in flight and every shard would pay
for its own connection pool. Instead each shard submits its coroutine to this process-wide
loop, and all of them share one `LLMClient`: its keep-alive connections and its per-endpoint
limits (per base URL list/settings).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Awaitable, TypeVar

from pathlib import Path

from gecko_factory.llm.budget import Budget, price_of
from gecko_factory.llm.cache import RequestCache
from gecko_factory.llm.client import LLMClient
from gecko_factory.llm.settings import LLMSettings

T = TypeVar("T")


class LLMRuntime:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gecko-llm-loop", daemon=True)
        self._thread.start()
        self._clients: dict[tuple, LLMClient] = {}
        self._running: dict[concurrent.futures.Future, str | None] = {}  # -> the caller's tag
        self._running_lock = threading.Lock()
        self._stopped: set[str] = set()  # tags cancel_all named: their later coroutines never start

    def run(self, coro: Awaitable[T], tag: str | None = None) -> T:
        """Run a coroutine on the shared loop and wait for it from the calling thread (`tag`:
        what `cancel_all` may name it by: its flow run's invocation id).

        Then commit the request caches' pending answers: what a finished shard paid for is on
        disk when its task returns (another run, or another process, will find it)."""
        with self._running_lock:
            if tag is not None and tag in self._stopped:
                getattr(coro, "close", lambda: None)()  # never awaited, and no warning that it was not
                raise concurrent.futures.CancelledError(f"{tag} was stopped")
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
            self._running[future] = tag
        try:
            return future.result()
        finally:
            with self._running_lock:
                self._running.pop(future, None)
            for client in list(self._clients.values()):
                if client.cache is not None:
                    client.cache.flush()

    def cancel_all(self, tag: str | None = None) -> int:
        """Cancel every coroutine `run` is waiting for, or those run with `tag` (a run is being
        stopped: SIGTERM, Ctrl-C; another run in the same process goes on).

        Each caller's `run` then raises CancelledError at once instead of waiting for its seeds or
        its outage back-offs to finish; returns how many were cancelled. A `tag` stays stopped:
        a shard that starts later (a task runner gives a freed thread the next queued shard at once)
        is cancelled as it starts, so a stopped run starts nothing new. Tag with something unique
        to one run (its invocation id), not with what a later run reuses."""
        with self._running_lock:
            if tag is not None:
                self._stopped.add(tag)
            running = [f for f, t in self._running.items() if tag is None or t == tag]
        return sum(f.cancel() for f in running)

    def client(self, settings: LLMSettings, base_url: str, cache_path: Path | None = None,
               cache_read: bool = True, budget_key: tuple | None = None) -> LLMClient:
        """A per-caller view (own usage counters) of the shared client. Call from the loop.

        `budget_key` = (run id, max USD, max tokens): shards of one run share one Budget."""
        key = (base_url, settings.model_dump_json(), cache_path, cache_read, budget_key)
        shared = self._clients.get(key)
        if shared is None:
            cache = RequestCache(cache_path, read=cache_read) if cache_path else None
            budget = None
            if budget_key is not None and (budget_key[1] is not None or budget_key[2] is not None):
                prices = price_of(settings.model, settings.price_prompt_per_m, settings.price_completion_per_m)
                budget = Budget(budget_key[1], budget_key[2], prices)
            shared = self._clients[key] = LLMClient(settings, base_url, cache=cache, budget=budget)
        return shared.scoped()

    def concurrency(self, base_url: str) -> dict[str, dict]:
        """Each endpoint's concurrency limit (fixed, or adaptive: start, final, peak) as the latest
        client for `base_url` in this process left it; {} when its shards ran elsewhere (Dask)."""
        found: dict[str, dict] = {}
        for key, client in list(self._clients.items()):  # insertion order: the latest run wins
            if key[0] == base_url:
                found.update(client.concurrency())
        return found


async def gather_all(*aws: Awaitable[T]) -> list[T]:
    """`asyncio.gather`, except that when one fails the others are cancelled (and awaited).

    Plain gather leaves them running after the first error: in an outage each would go on
    retrying a dead server through its whole back-off after its shard had already failed."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


_lock = threading.Lock()
_runtime: LLMRuntime | None = None


def get_runtime() -> LLMRuntime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = LLMRuntime()
        return _runtime
