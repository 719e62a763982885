"""Adaptive concurrency: the limit's rules on a virtual clock, the pool as its gate, the settings
that turn it on, and one real-HTTP run against a server with a capacity knee."""

import asyncio
import heapq
import logging
import random
import time

import pytest

from gecko_factory.llm.client import LLMClient, LLMError
from gecko_factory.llm.concurrency import AdaptiveLimit
from gecko_factory.llm.endpoints import EndpointPool
from gecko_factory.llm.settings import LLMSettings, client_settings
from gecko_factory.testing.knee_server import KneeServer

URL = "http://127.0.0.1:9/v1"  # never connected to: the pool's gate needs no server


class KneeSim:
    """A client with a backlog and the knee server (C slots, FIFO queue, 429 beyond 2C in flight),
    on a virtual clock: what bench/concurrency.py measures, without the CPU's noise. Service times
    vary +-20 % (seeded): identical ones keep the calls in lock-step cohorts, where a queue of
    0.4 C makes some calls wait a whole service time and the rest none, and the median sees none."""

    def __init__(self, capacity: int, service_s: float, initial: int = 8):
        self.rng = random.Random(0)
        self.now = 0.0
        self.limit = AdaptiveLimit(initial, clock=lambda: self.now, name="sim")
        self.capacity, self.service_s = capacity, service_s
        self.slots = [0.0] * capacity  # when each server slot is next free
        self.events: list = []  # (time, ticket, sent, refused)
        self.in_flight = self.admitted = self.done = self.refused = 0

    def _admit(self) -> None:
        while self.in_flight < self.limit.limit:
            self.in_flight += 1
            self.admitted += 1
            if self.in_flight > 2 * self.capacity:
                heapq.heappush(self.events, (self.now + 0.001, self.admitted, self.now, True))
                continue
            finish = max(self.now, heapq.heappop(self.slots)) + self.service_s * self.rng.uniform(0.8, 1.2)
            heapq.heappush(self.slots, finish)
            heapq.heappush(self.events, (finish, self.admitted, self.now, False))

    def run(self, calls: int) -> "KneeSim":
        self._admit()
        while self.done < calls:
            self.now, ticket, sent, refused = heapq.heappop(self.events)
            self.limit.on_sample(ticket, self.now - sent, refused, self.in_flight, self.admitted)
            self.in_flight -= 1
            self.done += not refused
            self.refused += refused
            self._admit()
        return self


def feed(limit: AdaptiveLimit, n: int, rtt: float, first_ticket: int, in_flight: int | None = None) -> int:
    """n answered calls with round trip `rtt` that fill the limit; returns the next ticket."""
    for t in range(first_ticket, first_ticket + n):
        limit.on_sample(t, rtt, False, in_flight or limit.limit, t)
    return first_ticket + n


@pytest.mark.parametrize("capacity", [64, 256])
def test_on_a_knee_it_settles_between_c_and_2c_without_a_429(capacity, caplog):
    with caplog.at_level(logging.INFO, logger="gecko_factory.llm.concurrency"):
        sim = KneeSim(capacity, 0.05).run(150 * capacity)  # ~150 round trips, ~20 of them the ramp from 8
    s = sim.limit.summary()
    assert sim.refused == 0 and s["overloads"] == 0
    assert capacity <= s["final"] < 2 * capacity and s["peak"] <= 2 * capacity, s
    best = sim.done / (sim.done * 0.05 / capacity + 0.05)  # the best fixed: full from the first call
    assert sim.done / sim.now >= 0.9 * best
    lines = [r.getMessage() for r in caplog.records]
    assert 2 <= len(lines) <= 12, lines  # material changes only, not one per window
    assert "concurrency limit 8 -> " in lines[0] and "calls/s" in lines[0]


def test_grows_while_latency_holds_and_stops_at_the_bound():
    limit = AdaptiveLimit(8, max_limit=100)
    ticket = feed(limit, 8, 0.1, 1)
    assert limit.limit == 14  # slow start: x1.75 a window while latency is as at low load
    for _ in range(40):
        ticket = feed(limit, limit.limit, 0.1, ticket)
    assert limit.limit == 100


def test_does_not_grow_when_the_caller_does_not_fill_the_limit():
    limit = AdaptiveLimit(8)
    feed(limit, 64, 0.1, 1, in_flight=3)  # a caller with 3 calls at a time says nothing about 8
    assert limit.limit == 8


def test_backs_off_once_per_round_trip_on_429_and_timeouts():
    limit = AdaptiveLimit(100)
    limit.on_sample(1, 0.01, True, 100, 100)
    assert limit.limit == 70 and not limit.slow_start
    for t in range(2, 101):  # the rest of the burst was sent under the old limit
        limit.on_sample(t, 0.01, True, 70, 100)
    assert limit.limit == 70
    limit.on_sample(101, 300.0, True, 70, 101)  # a timeout of a call sent since
    assert limit.limit == 49 and limit.summary()["overloads"] == 2


def test_rising_latency_cuts_at_most_a_quarter_and_the_floor_is_one():
    limit = AdaptiveLimit(64)
    ticket = feed(limit, 8, 0.1, 1)  # the baseline; limit 112
    ticket = feed(limit, 49, 10.0, ticket)  # the raise's burst (49 calls let in at once) answers...
    ticket = feed(limit, 14, 10.0, ticket)  # ...and a window of the calls after it: latency x100
    assert limit.limit == 84  # x0.75, not x0.014: one window may be a stall
    for t in range(ticket, ticket + 30):  # each 429 from a call sent after the last cut
        limit.on_sample(t, 0.1, True, limit.limit, t)
    assert limit.limit == 1


def test_after_a_raise_the_window_waits_for_the_burst_to_reach_the_server():
    # The calls a raise lets in at once open connections or take free slots; calls sent just
    # after them can overtake them and answer as if the new limit were free.
    limit = AdaptiveLimit(8)
    feed(limit, 8, 0.1, 1)  # limit 14: calls 9..15 are the burst
    for t in range(16, 41):  # later calls overtake the burst and answer fast: they say nothing
        limit.on_sample(t, 0.1, False, 14, 40)
    assert limit.limit == 14
    for t in range(9, 16):  # the burst answers: it has reached the server
        limit.on_sample(t, 0.5, False, 14, 40)
    assert limit.limit == 14
    for t in range(41, 49):  # the window: calls sent after the burst, answering after it, queued behind it
        limit.on_sample(t, 0.5, False, 14, 48)
    assert limit.limit < 14 and not limit.slow_start


def test_a_call_that_says_nothing_still_closes_its_window():
    limit = AdaptiveLimit(8)
    for t in range(1, 9):  # 500s, refused connections: no round trip, no decision, no stall
        limit.on_sample(t, None, False, 8, t)
    assert limit.limit == 8
    feed(limit, 8, 0.1, 9)
    assert limit.limit == 14


def test_the_pool_lets_waiters_through_when_the_limit_grows_and_holds_them_when_it_falls():
    async def go():
        pool = EndpointPool([URL], 8, None, adaptive=True)
        ep = pool.endpoints[0]
        held = [await pool.acquire() for _ in range(8)]
        got: list = []

        async def waiter():
            got.append(await pool.acquire())

        waiters = [asyncio.ensure_future(waiter()) for _ in range(20)]
        await asyncio.sleep(0)
        assert not got and ep.in_flight == 8
        sent = time.monotonic() - 0.05
        for ticket, e in enumerate(held, 1):  # 8 answers at flat latency: the limit grows to 14
            pool.release(e, ticket, sent, False)
        for _ in range(20):
            await asyncio.sleep(0)
        assert ep.limit == 14 and len(got) == 14 and ep.in_flight == 14
        pool.release(got.pop(), 10**6, sent, True)  # a 429 from a call sent well after: 14 -> 9
        for _ in range(5):
            await asyncio.sleep(0)
        assert ep.limit == 9 and ep.in_flight == 13 and len(got) == 13  # nobody new until below 9
        for _ in range(5):
            pool.release(got.pop())
        for _ in range(5):
            await asyncio.sleep(0)
        assert ep.in_flight == 9 and len(got) == 9  # 8 left + the one the fifth release let in
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

    asyncio.run(go())


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("OPENAI_BASE_URL", "GECKO_LLM_BASE_URL", "GECKO_LLM_CONCURRENCY", "GECKO_LLM_ADAPTIVE_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_on_for_configured_endpoints_off_when_the_user_sets_concurrency(clean_env):
    clean_env.setenv("GECKO_LLM_BASE_URL", URL)
    auto = client_settings(LLMSettings(_env_file=None))
    assert auto.adaptive() and auto.public_dict()["adaptive_concurrency"] is True
    assert LLMClient(auto, URL).endpoints[0].limiter is not None
    clean_env.setenv("GECKO_LLM_CONCURRENCY", "32")
    fixed = client_settings(LLMSettings(_env_file=None))
    assert not fixed.adaptive() and fixed.public_dict()["adaptive_concurrency"] is False
    client = LLMClient(fixed, URL)
    assert client.endpoints[0].limiter is None and client.concurrency() == {URL: {"mode": "fixed", "limit": 32}}
    clean_env.setenv("GECKO_LLM_ADAPTIVE_CONCURRENCY", "true")  # both: adaptive, starting at 32
    assert LLMClient(client_settings(LLMSettings(_env_file=None)), URL).concurrency()[URL]["start"] == 32


def test_the_embedded_server_keeps_its_fixed_one(clean_env):
    embedded = client_settings(LLMSettings(_env_file=None))
    assert embedded.concurrency == 1 and not embedded.adaptive()
    assert LLMClient(embedded, URL).concurrency() == {URL: {"mode": "fixed", "limit": 1}}
    clean_env.setenv("GECKO_LLM_CONCURRENCY", "2")  # the user's setting wins
    assert client_settings(LLMSettings(_env_file=None)).concurrency == 2


def test_the_manifest_reads_each_endpoints_limit_from_the_latest_client(clean_env):
    from gecko_factory.llm.runtime import LLMRuntime

    runtime = LLMRuntime()  # the flow's: fret.py records runtime.concurrency(base_url) in manifest.llm
    other = "http://127.0.0.1:10/v1"
    runtime.client(LLMSettings(_env_file=None, concurrency=4), URL)
    runtime.client(LLMSettings(_env_file=None, adaptive_concurrency=True), URL, budget_key=("run2", None, None))
    runtime.client(LLMSettings(_env_file=None), other)
    limits = runtime.concurrency(URL)
    assert list(limits) == [URL] and limits[URL]["mode"] == "adaptive" and limits[URL]["start"] == 8
    assert runtime.concurrency("http://127.0.0.1:11/v1") == {}  # shards that ran in other processes


def test_real_http_against_a_knee_of_16_settles_near_it():
    capacity = 16

    async def go(url: str) -> dict:
        client = LLMClient(LLMSettings(_env_file=None, model="knee", adaptive_concurrency=True), url)
        todo = iter(range(1500))

        async def worker():
            for i in todo:
                await client.chat([{"role": "user", "content": f"call {i}"}], max_tokens=1)

        try:
            await asyncio.gather(*(worker() for _ in range(64)))
            return client.concurrency()[url]
        finally:
            await client.aclose()

    with KneeServer(capacity, service_ms=40) as srv:
        t0 = time.perf_counter()
        try:
            limit = asyncio.run(go(srv.base_url))
        except LLMError as exc:  # out of retries: a 429 storm
            pytest.fail(f"{exc}: {srv.stats()}")
        seconds = time.perf_counter() - t0
        stats = srv.stats()
    assert stats["max_in_service"] == capacity  # it found the capacity...
    assert stats["429"] <= 0.01 * stats["requests"], stats  # ...without a storm of refusals
    assert capacity * 0.75 <= limit["final"] <= 2 * capacity, limit
    assert seconds < 15
