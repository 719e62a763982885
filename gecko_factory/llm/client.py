"""An async client for any OpenAI-compatible server (OpenAI, vLLM, Ollama, our embedded one).

One `LLMClient` per event loop: bounded concurrency, retries with exponential backoff and jitter
on transient failures only (429, 5xx, timeouts, connection errors), and usage counted per call.
The API key lives in a `SecretStr` and is handed to the openai client only; error messages are
built from the base URL and the server's message, never from the request headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from dataclasses import dataclass, field

import openai
from openai import AsyncOpenAI

from gecko_factory.llm.budget import Budget
from gecko_factory.llm.cache import RequestCache, request_key
from gecko_factory.llm.settings import LLMSettings

log = logging.getLogger(__name__)

_TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


class LLMError(RuntimeError):
    """A request that failed for good (not transient, or out of retries)."""


class LLMUnreachable(LLMError):
    """The server could not be reached at all."""


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the same request may well succeed later."""
    if isinstance(exc, _TRANSIENT + (json.JSONDecodeError, openai.APIResponseValidationError)):
        return True  # APITimeoutError is an APIConnectionError
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failed_calls: int = 0
    cache_hits: int = 0

    def add(self, other: "Usage") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class PromptLogprobs:
    """Log-probs of a prompt's tokens, with each token's character offset in the prompt."""

    tokens: list[str]
    logprobs: list[float | None]
    offsets: list[int]

    def span(self, start: int, end: int) -> float:
        """Sum of log-probs of the tokens that overlap prompt characters [start, end)."""
        total, found = 0.0, False
        for i, off in enumerate(self.offsets):
            tok_end = self.offsets[i + 1] if i + 1 < len(self.offsets) else off + len(self.tokens[i])
            if off < end and tok_end > start and tok_end > off:
                lp = self.logprobs[i]
                if lp is None:
                    raise LLMError("the first prompt token has no log-prob: put a prefix before the span")
                total, found = total + lp, True
        if not found:
            raise LLMError(f"no prompt token overlaps characters {start}..{end}")
        return total


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    first_token_top: dict[str, float] = field(default_factory=dict)  # token -> log-prob


class LLMClient:
    def __init__(self, settings: LLMSettings, base_url: str, *, max_retries: int | None = None,
                 cache: RequestCache | None = None, budget: Budget | None = None):
        self.settings = settings
        self.base_url = base_url
        self.cache = cache
        self.budget = budget
        self.usage = Usage()
        self.json_schema_supported = True
        self._max_retries = settings.max_retries if max_retries is None else max_retries
        self._sem = asyncio.Semaphore(settings.concurrency)
        key = settings.api_key.get_secret_value() if settings.api_key else "unused"
        # The openai client's own retries are off: ours know which errors are transient and count.
        self._client = AsyncOpenAI(
            base_url=base_url, api_key=key, timeout=settings.timeout_s, max_retries=0
        )

    def scoped(self) -> "LLMClient":
        """The same connection pool, limit and capabilities, with usage counted apart."""
        view = object.__new__(LLMClient)
        view.__dict__.update(self.__dict__)
        view.usage = Usage()
        return view

    async def aclose(self) -> None:
        await self._client.close()

    async def _call(self, make_request):
        delay = self.settings.backoff_s
        for attempt in range(self._max_retries + 1):
            try:
                async with self._sem:
                    if self.budget is not None:
                        self.budget.check()  # raises BudgetExhausted: not an LLMError, not retried
                    response = await make_request()
                self.usage.calls += 1
                usage = getattr(response, "usage", None)  # a model list has none
                if usage is not None:
                    self.usage.prompt_tokens += usage.prompt_tokens or 0
                    self.usage.completion_tokens += usage.completion_tokens or 0
                    if self.budget is not None:
                        self.budget.add(usage.prompt_tokens or 0, usage.completion_tokens or 0)
                return response
            except (openai.APIError, json.JSONDecodeError) as exc:
                # A 200 whose body does not parse (a proxy cut it, a server bug) is worth a retry.
                self.usage.failed_calls += 1
                if not is_transient(exc) or attempt == self._max_retries:
                    raise self._wrap(exc) from exc
                self.usage.retries += 1
                # Full jitter: spread retries of a burst of 429s instead of replaying the burst.
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay *= 2
        raise AssertionError("unreachable")

    def _wrap(self, exc: Exception) -> LLMError:
        if isinstance(exc, openai.APITimeoutError):
            return LLMError(f"LLM server {self.base_url} did not answer within {self.settings.timeout_s}s")
        if isinstance(exc, openai.APIConnectionError):
            return LLMUnreachable(f"cannot reach the LLM server at {self.base_url}: {exc.message}")
        if isinstance(exc, json.JSONDecodeError):
            return LLMError(f"LLM server {self.base_url} sent a body that is not JSON: {exc.msg}")
        status = getattr(exc, "status_code", "?")
        return LLMError(f"LLM server {self.base_url} answered {status}: {getattr(exc, 'message', exc)}")

    async def chat(
        self,
        messages: list[dict],
        *,
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int | None = None,
        json_schema: dict | None = None,
        top_logprobs: int = 0,
    ) -> ChatResult:
        kwargs: dict = {"model": self.settings.model, "messages": messages,
                        "temperature": temperature, "max_tokens": max_tokens}
        if seed is not None:
            kwargs["seed"] = seed
        if top_logprobs:
            kwargs.update(logprobs=True, top_logprobs=top_logprobs)
        if json_schema is not None and self.json_schema_supported:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": json_schema, "strict": True},
            }
        key = request_key("chat", kwargs)
        if (hit := self._cached(key)) is not None:
            return ChatResult(hit["text"], hit["finish_reason"], hit["top"])
        try:
            response = await self._call(lambda: self._client.chat.completions.create(**kwargs))
        except LLMError as exc:
            # Some servers reject response_format; fall back to prompting alone, once, loudly.
            if "response_format" in kwargs and "response_format" in str(exc):
                log.warning("server rejects response_format=json_schema; validating JSON ourselves")
                self.json_schema_supported = False
                return await self.chat(messages, temperature=temperature, max_tokens=max_tokens,
                                       seed=seed, json_schema=None, top_logprobs=top_logprobs)
            raise
        if not response.choices:
            raise LLMError(f"LLM server {self.base_url} answered with no choices")
        choice = response.choices[0]
        top: dict[str, float] = {}
        if top_logprobs and choice.logprobs and choice.logprobs.content:
            for alt in choice.logprobs.content[0].top_logprobs:
                top[alt.token] = alt.logprob
        result = ChatResult(choice.message.content or "", choice.finish_reason, top)
        self._store(key, "chat", {"text": result.text, "finish_reason": result.finish_reason, "top": top})
        return result

    async def prompt_logprobs(self, prompt: str) -> PromptLogprobs:
        """Log-probs of every prompt token, via completions `echo` + `logprobs` (vLLM's way)."""
        kwargs = dict(model=self.settings.model, prompt=prompt, max_tokens=1, temperature=0.0,
                      echo=True, logprobs=1)
        key = request_key("completions", kwargs)
        if (hit := self._cached(key)) is not None:
            return PromptLogprobs(hit["tokens"], hit["logprobs"], hit["offsets"])
        response = await self._call(lambda: self._client.completions.create(**kwargs))
        lp = response.choices[0].logprobs if response.choices else None
        if lp is None or not lp.token_logprobs or lp.text_offset is None:
            raise LLMError(f"{self.base_url} returned no prompt log-probs for echo=True")
        # Keep the prompt's tokens only (the one generated token follows them).
        n = sum(1 for off in lp.text_offset if off < len(prompt))
        result = PromptLogprobs(list(lp.tokens[:n]), list(lp.token_logprobs[:n]), list(lp.text_offset[:n]))
        self._store(key, "completions", {"tokens": result.tokens, "logprobs": result.logprobs,
                                         "offsets": result.offsets})
        return result

    def _cached(self, key: str) -> dict | None:
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            self.usage.cache_hits += 1
        return hit

    def _store(self, key: str, kind: str, body: dict) -> None:
        if self.cache is not None:
            self.cache.put(key, kind, body)

    async def supports_prompt_logprobs(self) -> bool:
        """One cheap probe: does completions `echo` return usable prompt log-probs?"""
        try:
            scores = await self.prompt_logprobs("Passage: probe.\nQuery: probe")
        except LLMUnreachable:
            raise
        except LLMError as exc:
            log.warning("no prompt log-probs from %s (%s): judging runs RC-only", self.base_url, exc)
            return False
        return any(lp is not None and math.isfinite(lp) for lp in scores.logprobs)

    async def check_reachable(self) -> None:
        """Fail fast, with the URL and without the key, when the server is not there."""
        try:
            await self._call(lambda: self._client.models.list())
        except LLMUnreachable:
            raise
        except LLMError as exc:  # some servers have no /models; reaching them is enough
            log.info("GET /models on %s failed (%s); continuing", self.base_url, exc)
