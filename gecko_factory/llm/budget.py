"""Spend limits and prices: what a run may still spend, and what it has spent.

Prices are USD per million tokens, from `LLMSettings` (GECKO_LLM_PRICE_PROMPT_PER_M /
GECKO_LLM_PRICE_COMPLETION_PER_M) or the table below; the embedded model costs nothing. A
`Budget` is shared by every shard of a run in one process and is checked before each request:
once reached, no new request starts (answers already paid for are in the cache), and the shards
that could not finish stay pending for `resume`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

# USD per 1M tokens (prompt, completion); a user can override with settings.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}


class BudgetExhausted(RuntimeError):
    """The run reached its --budget-usd or --max-tokens: stop cleanly, resume later."""


def price_of(model: str, prompt_per_m: float | None = None, completion_per_m: float | None = None) -> tuple[float, float]:
    base = PRICES.get(model, (0.0, 0.0))
    return (base[0] if prompt_per_m is None else prompt_per_m,
            base[1] if completion_per_m is None else completion_per_m)


def cost_usd(prompt_tokens: int, completion_tokens: int, prices: tuple[float, float]) -> float:
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6


@dataclass
class Budget:
    max_usd: float | None
    max_tokens: int | None
    prices: tuple[float, float]

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @property
    def spent_usd(self) -> float:
        return cost_usd(self.prompt_tokens, self.completion_tokens, self.prices)

    def check(self) -> None:
        with self._lock:
            if self.max_tokens is not None and self.prompt_tokens + self.completion_tokens >= self.max_tokens:
                raise BudgetExhausted(f"token budget reached: {self.prompt_tokens + self.completion_tokens:,} "
                                      f">= --max-tokens {self.max_tokens:,}")
            if self.max_usd is not None and self.spent_usd >= self.max_usd:
                raise BudgetExhausted(f"cost budget reached: ${self.spent_usd:.4f} >= --budget-usd {self.max_usd}")

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
