"""The embedded server's own profile: what each llama context did (`GET /stats`).

Calls, prompt tokens sent and actually computed (the rest came from the prefix cache or the head
store), prompts that began from a stored head, tokens generated, seconds computing and seconds
waiting for the context's lock. bench/embedded.py reads
it to set the factory's token rates against the model's own.
"""

from __future__ import annotations

import threading
import time


class ContextStats:
    """What one llama context did: the server's own profile (`GET /stats`)."""

    def __init__(self) -> None:
        self.calls = self.prompt_tokens = self.computed_tokens = self.generated_tokens = 0
        # grammar-constrained tokens, and those of them the grammar refused on the first draw
        # (grammar_last.py: each costs a second, full-vocabulary draw)
        self.constrained_tokens = self.grammar_resampled = 0
        self.heads_restored = 0  # prompts that began from the head store (server_row_eval.HeadStore)
        self.busy_s = self.wait_s = 0.0
        self.first_start: float | None = None  # time.time() when its first call arrived
        self.last_end: float | None = None  # ... and when its last one finished

    def as_dict(self) -> dict[str, float | None]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "computed_tokens": self.computed_tokens, "generated_tokens": self.generated_tokens,
                "constrained_tokens": self.constrained_tokens,
                "grammar_resampled": self.grammar_resampled, "heads_restored": self.heads_restored,
                "busy_s": round(self.busy_s, 3), "wait_s": round(self.wait_s, 3),
                "first_start": self.first_start, "last_end": self.last_end}


class timed:  # noqa: N801 (a context manager, used as a function)
    """`with timed(lock, stats)`: hold `lock`, adding the wait and the hold to `stats`."""

    def __init__(self, lock: threading.Lock, stats: ContextStats):
        self.lock, self.stats = lock, stats

    def __enter__(self) -> ContextStats:
        if self.stats.first_start is None:
            self.stats.first_start = time.time()
        t0 = time.perf_counter()
        self.lock.acquire()
        self.t1 = time.perf_counter()
        self.stats.wait_s += self.t1 - t0
        self.stats.calls += 1
        return self.stats

    def __exit__(self, *exc) -> None:
        self.stats.busy_s += time.perf_counter() - self.t1
        self.stats.last_end = time.time()
        self.lock.release()
