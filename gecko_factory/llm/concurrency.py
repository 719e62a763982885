"""Adaptive concurrency per LLM endpoint: how many calls to keep in flight, learnt from the calls.

Why: a vLLM replica fills its batch only with hundreds of requests in flight, a rate-limited API
wants a few, and a fixed number is a guess that is wrong for one or the other. `AdaptiveLimit`
does what TCP Vegas and Netflix's concurrency-limits do, on windows of completed calls:

- Latency holds (the window's median round trip within `tolerance`, +40 %, of the baseline,
  the lowest window median seen) and the calls filled the limit (the limit, not the caller, set
  the pace): the limit grows, x1.5 a window at first (slow start, which holds at +20 % and ends
  when two windows in a row say so; x1.75 while within 5 %), then by sqrt(limit). By Little's
  law throughput = calls in flight / latency, so a limit that grows while latency holds is
  throughput that rises; a window that did not fill the limit says nothing, and does not grow it.
- Latency rises beyond the tolerance: the server queues more than wanted. The limit moves
  halfway to limit * 1.4 * baseline/median (the gradient, smoothed as Netflix's Gradient2
  does, so one noisy window costs at most a quarter): at a knee of capacity C, L in flight
  wait L/C service times, so that is 1.4 C. Some queue at the server is wanted: a batch job
  wants throughput, not latency, and a server whose queue never empties never idles between
  one answer and the client's next request; 2 C, where a full server starts refusing, stays
  out of reach.
- A 429, a 503 or a timeout (`overload`): the limit x0.7 at once (multiplicative decrease), and
  slow start ends.

Only calls sent after the last change count (TCP's one decision per round trip): the 429s of
calls sent under the old limit do not cut the new one again, and after a raise the window waits
for the burst it let in (see on_sample). Every 30 windows the limit is halved for one window to
measure the baseline afresh (BBR's ProbeRTT), so that a lasting change of service time (longer
prompts) is learnt rather than fought, and a baseline that only ever went down or only drifted
up cannot walk the limit away from the knee. Bounds [1, 1024].
The gate that holds calls to the limit is `EndpointPool` (endpoints.py): it reads `limit` on
every pick, so a limit raised while calls wait lets them through, and a lowered one admits
nobody until the calls in flight drain below it.
"""

from __future__ import annotations

import logging
import math
import time

log = logging.getLogger(__name__)

MAX_LIMIT = 1024
# Slow start's steps: x1.75 while latency is within 5 % of the baseline (at a knee of C, at most
# 1.05 C in flight: 1.84 C after the step), else x1.5 up to +20 % (1.2 C: 1.8 C after). Both stay
# under 2 C, where the knee server starts refusing; x2 from 1.2 C would reach 2.4 C.
FAST_START_GROWTH = 1.75
SLOW_START_GROWTH = 1.5
BACKOFF = 0.7  # on 429/503/timeout, as CUBIC (TCP halves; 0.7 recovers faster at large limits)
MIN_GRADIENT = 0.5  # one window's latency spike (a GC pause, a noisy neighbour): x0.75 at most
PROBE_EVERY = 30  # windows after slow start; one window at half the limit costs ~1.5 % of them
MIN_WINDOW = 8  # samples: a median of fewer is noise
LOG_EVERY_S = 30.0


class AdaptiveLimit:
    """The concurrency limit of one endpoint: `limit` before each call, `on_sample` after it."""

    def __init__(self, initial: int = 8, *, min_limit: int = 1, max_limit: int = MAX_LIMIT,
                 tolerance: float = 0.4, name: str = "", clock=time.monotonic):
        self.min_limit, self.max_limit, self.tolerance = min_limit, max_limit, tolerance
        self.name = name
        self._clock = clock
        self._limit = float(min(max(initial, min_limit), max_limit))
        self.initial = self.peak = self.lowest = int(self._limit)
        self.slow_start = True
        self.baseline: float | None = None  # seconds
        self.last_median: float | None = None
        self.overloads = self.decreases = 0
        self._near_knee = False  # slow start held once
        self._windows = 0  # since the last probe
        self._probe_from: float | None = None  # the limit to go back to, while probing
        # Calls are known by their admission number (ticket). `_since`: the first sent under the
        # current limit; `_burst_end`: the last of the burst a raise let in at once; windows count
        # the calls from `_count_from` on (None: not yet, see on_sample).
        self._since, self._burst_end, self._burst_left = 1, 0, 0
        self._count_from: int | None = 1
        self._size = self._window_size()
        self._rtts: list[float] = []
        self._max_in_flight = 0
        self._logged_limit, self._logged_at, self._quiet_backoffs = int(self._limit), clock(), 0

    @property
    def limit(self) -> int:
        return int(self._limit)

    def _window_size(self) -> int:
        # limit/8 answers in slow start: a step then takes ~1 round trip. Then limit/2: longer
        # windows average out the client's own stalls (a busy CPU) at the cost of slower steps.
        return max(MIN_WINDOW, int(self._limit / (8 if self.slow_start else 2)))

    def on_sample(self, ticket: int, rtt: float | None, overload: bool, in_flight: int, admitted: int) -> None:
        """One finished call: `ticket` its admission number on this endpoint (1, 2, ...), its round
        trip in seconds (None: it says nothing about capacity, a 500, a refused connection, a
        cancel), whether the server said it is overloaded, the calls in flight with it (itself
        included) and the calls admitted so far (the next one gets `admitted` + 1).

        After a raise, windows count neither the burst it let in at once (those calls take the
        server's free slots first) nor anything answered before 90 % of the burst has: calls
        sent just after the burst overtake it while it opens its connections, and answer as if
        the new limit were free (seen: slow start overshooting to 2.7 C, and 429s)."""
        if ticket < self._since:
            return  # sent under the previous limit (TCP's one decision per round trip)
        if overload:
            self.overloads += 1
            self.slow_start = False
            if self._probe_from is not None:  # refused even at half: back off from where it was
                self._limit, self._probe_from = self._probe_from, None
            self._set(self._limit * BACKOFF, "overloaded (429/503/timeout)", in_flight, admitted)
            return
        if self._count_from is None:
            if ticket <= self._burst_end:
                self._burst_left -= 1
                if self._burst_left <= (self._burst_end - self._since) // 10:  # the burst is at the server
                    self._count_from = self._burst_end + 1
            return
        if ticket < self._count_from or rtt is None:
            return
        self._rtts.append(rtt)
        self._max_in_flight = max(self._max_in_flight, in_flight)
        if len(self._rtts) >= self._size:
            self._decide(in_flight, admitted)

    def _decide(self, in_flight: int, admitted: int) -> bool:
        """The limit after one window; True when it changed."""
        rtts = sorted(self._rtts)
        median = self.last_median = rtts[len(rtts) // 2]
        filled = self._max_in_flight >= int(0.9 * self._limit)
        self._rtts.clear()
        self._max_in_flight = 0
        if self._probe_from is not None:  # the probe's window: its median is the baseline now
            self.baseline, back, self._probe_from = median, self._probe_from, None
            return self._set(back, "baseline probed", in_flight, admitted, quiet=True)
        self.baseline = median if self.baseline is None else min(median, self.baseline)
        if median > self.baseline * (1 + self.tolerance):
            self.slow_start = False
            gradient = max(MIN_GRADIENT, self.baseline * (1 + self.tolerance) / median)
            return self._set(self._limit * (1 + gradient) / 2, "latency rising", in_flight, admitted)
        if self.slow_start and median > self.baseline * (1 + self.tolerance / 2):
            # Near the knee, or one noisy window: hold, and end slow start if the next says so too.
            self.slow_start = not self._near_knee
            self._near_knee = True
            return False
        self._near_knee = False
        self._windows += 0 if self.slow_start else 1
        if self._windows >= PROBE_EVERY:
            self._windows, self._probe_from = 0, self._limit
            return self._set(self._limit / 2, "probing the baseline", in_flight, admitted, quiet=True)
        if filled and self._limit < self.max_limit:
            if not self.slow_start:
                grown = self._limit + math.sqrt(self._limit)
            else:  # latency as at low load: far from the knee, a longer step
                grown = self._limit * (FAST_START_GROWTH if median <= self.baseline * 1.05 else SLOW_START_GROWTH)
            return self._set(grown, "latency holds", in_flight, admitted)
        return False

    def _set(self, value: float, why: str, in_flight: int, admitted: int, quiet: bool = False) -> bool:
        """A new limit; `quiet` for a probe and its end (not a decision about the endpoint)."""
        old = self.limit
        self._limit = min(max(value, self.min_limit), self.max_limit)
        new = self.limit
        # A raise frees this many slots at once (`in_flight` still counts the reporting call).
        burst = max(0, new - in_flight + 1) if new > old else 0
        self._since, self._burst_end, self._burst_left = admitted + 1, admitted + burst, burst
        self._count_from = None if burst else self._since
        self._size = self._window_size()
        self._rtts.clear()
        self._max_in_flight = 0
        if quiet:
            log.debug("LLM endpoint %s: concurrency %d -> %d (%s)", self.name, old, new, why)
            return True
        self.peak, self.lowest = max(self.peak, new), min(self.lowest, new)
        if new < old:
            self.decreases += 1
        self._log(old, why)
        return True

    def _log(self, old: int, why: str) -> None:
        # INFO only for a material change: a doubling or halving since the last line, or a
        # 20 % move after LOG_EVERY_S; a 429 back-off is counted and named in the next line.
        new, now = self.limit, self._clock()
        if why.startswith("overloaded"):
            self._quiet_backoffs += 1
        ratio = new / max(1, self._logged_limit)
        material = ratio >= 2 or ratio <= 0.5 or (now - self._logged_at >= LOG_EVERY_S and abs(ratio - 1) >= 0.2)
        log.debug("LLM endpoint %s: concurrency %d -> %d (%s; median %s s, baseline %s s)", self.name, old, new,
                  why, self.last_median, self.baseline)
        if not material:
            return
        ms = f"median {1000 * self.last_median:.0f} ms, baseline {1000 * self.baseline:.0f} ms" \
            if self.last_median is not None and self.baseline is not None else "no latency yet"
        rate = f", ~{new / self.last_median:.0f} calls/s" if self.last_median else ""
        backoffs = f", {self._quiet_backoffs} back-offs on 429/timeout" if self._quiet_backoffs else ""
        log.info("LLM endpoint %s: concurrency limit %d -> %d (%s: %s%s%s)", self.name,
                 self._logged_limit, new, why, ms, rate, backoffs)
        self._logged_limit, self._logged_at, self._quiet_backoffs = new, now, 0

    def summary(self) -> dict:
        """For the manifest: where the limit started, ended, and the range it moved in."""
        final = int(self._probe_from if self._probe_from is not None else self._limit)
        return {"mode": "adaptive", "start": self.initial, "final": final, "peak": self.peak,
                "lowest": self.lowest, "decreases": self.decreases, "overloads": self.overloads,
                "baseline_ms": None if self.baseline is None else round(1000 * self.baseline, 1)}

