"""An async client for any OpenAI-compatible server (OpenAI, vLLM, Ollama, our embedded one).

One `LLMClient` per event loop: a concurrency limit per endpoint (fixed, or adaptive: learnt
from each endpoint's latency and 429s, concurrency.py), one or several endpoints
(`endpoints.py`: keep-alive HTTP/1.1, least-in-flight balancing), retries with exponential backoff
and jitter on transient failures only (429, 5xx, timeouts, connection errors, malformed bodies),
and usage counted per call. Answers are read straight from the JSON (the fields we use), not
built into pydantic models: at hundreds of millions of calls the client's CPU per call counts.
The API key goes into the Authorization header bytes and nowhere else; error messages are built
from the endpoint URL and the server's message, never from the request headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field

from gecko_factory.llm.budget import Budget
from gecko_factory.llm.cache import RequestCache, request_key
from gecko_factory.llm.endpoints import (ConnectFailed, Endpoint, EndpointPool, HTTPStatusError, MalformedResponse,
                                         RequestTimeout, TransportError, split_base_urls)
from gecko_factory.llm.errors import (REJECTED_STATUSES, LLMError, LLMRequestRejected,  # noqa: F401 (re-exported)
                                     LLMServiceError, LLMUnreachable, is_overload, is_transient)
from gecko_factory.llm.settings import LLMSettings

log = logging.getLogger(__name__)


# The longest Retry-After honoured; a longer one (an hour's quota) waits this long and retries,
# and if the server still refuses, the retries run out and the shard fails to be resumed later.
MAX_RETRY_AFTER_S = 60.0


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failed_calls: int = 0
    cache_hits: int = 0

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
        """`base_url`: one OpenAI-compatible base URL (…/v1) or several, comma-separated."""
        self.settings = settings
        self.base_url = base_url
        self.cache = cache
        self.budget = budget
        self.usage = Usage()
        self.json_schema_supported = True
        self.prompt_lists_supported = True  # several prompts in one completions request
        self.prompt_logprobs_from = settings.sends_extension(settings.prompt_logprobs_from)
        self.prefix_break = settings.sends_extension(settings.prefix_break)
        self._max_retries = settings.max_retries if max_retries is None else max_retries
        key = settings.api_key.get_secret_value() if settings.api_key else None
        # settings.concurrency is per endpoint: each replica gets as many calls as one alone would
        # (with adaptive concurrency, where each endpoint's own limit starts).
        self.pool = EndpointPool(split_base_urls(base_url), settings.concurrency, key, settings.transport,
                                 adaptive=settings.adaptive())

    @property
    def endpoints(self) -> list[Endpoint]:
        return self.pool.endpoints

    def scoped(self) -> "LLMClient":
        """The same endpoints, connections, limit and capabilities, with usage counted apart."""
        view = object.__new__(LLMClient)
        view.__dict__.update(self.__dict__)
        view.usage = Usage()
        return view

    def with_model(self, model: str | None) -> "LLMClient":
        """The same client — endpoints, limit, cache, budget and usage counters — asking for
        another model (the judge's, when it is not the generator)."""
        if not model or model == self.settings.model:
            return self
        view = object.__new__(LLMClient)
        view.__dict__.update(self.__dict__)
        view.settings = self.settings.model_copy(update={"model": model})
        return view

    def concurrency(self) -> dict[str, dict]:
        """Each endpoint's concurrency limit (fixed, or adaptive: start, final, peak), for the manifest."""
        return self.pool.concurrency()

    async def aclose(self) -> None:
        self.pool.close()

    async def _call(self, method: str, path: str, body: dict | None, parse):
        """Send, retry what is transient (on another endpoint when there is one), parse, count."""
        delay = self.settings.backoff_s
        avoid: Endpoint | None = None
        failure: Exception | None = None
        for attempt in range(self._max_retries + 1):
            ep = await self.pool.acquire(avoid)
            # What an adaptive limit learns from this call (pool.release): its admission number,
            # and when it was sent if it says something about capacity (an answer, or a refusal
            # as overloaded), else None.
            ticket, sent = ep.calls, time.monotonic()
            started: float | None = None
            overload = False
            try:
                if self.budget is not None:
                    self.budget.check()  # raises BudgetExhausted: not an LLMError, not retried
                answer = await ep.request(method, path, body, self.settings.timeout_s)
                started = sent
                result = parse(answer)
            except (TransportError, HTTPStatusError, MalformedResponse, json.JSONDecodeError) as exc:
                self.usage.failed_calls += 1
                failure = exc
                if is_overload(exc):
                    started, overload = sent, True
                if isinstance(exc, ConnectFailed):
                    ep.mark_down(str(exc))
                if not is_transient(exc) or attempt == self._max_retries:
                    raise self._wrap(exc, ep) from exc
            else:
                ep.mark_up()
                self.usage.calls += 1
                usage = answer.get("usage")  # a model list has none
                if isinstance(usage, dict):
                    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
                    self.usage.prompt_tokens += prompt
                    self.usage.completion_tokens += completion
                    if self.budget is not None:
                        self.budget.add(prompt, completion)
                return result
            finally:
                self.pool.release(ep, ticket, started, overload)
            self.usage.retries += 1
            avoid = ep
            if isinstance(failure, ConnectFailed) and self.pool.other_up(ep):
                continue  # that endpoint is down, another is up: no reason to wait
            # Full jitter: spread retries of a burst of 429s instead of replaying the burst.
            wait = delay * (0.5 + random.random())
            if isinstance(failure, HTTPStatusError) and failure.retry_after is not None:
                # the server said when (a rate limit's window): sooner only earns another 429
                wait = max(wait, min(failure.retry_after, MAX_RETRY_AFTER_S))
            await asyncio.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")

    def _wrap(self, exc: Exception, ep: Endpoint) -> LLMError:
        """The client's error for a failed call: what kind it is decides who handles it (a
        service error fails the shard, a rejected request skips one item, any other fails at once)."""
        tries = f" ({self._max_retries + 1} attempts)" if is_transient(exc) else ""
        if isinstance(exc, RequestTimeout):
            return LLMServiceError(f"LLM server {ep.url} did not answer within {self.settings.timeout_s}s{tries}")
        if isinstance(exc, TransportError):
            return LLMUnreachable(f"cannot reach the LLM server at {ep.url}: {exc}{tries}")
        if isinstance(exc, json.JSONDecodeError):
            return LLMServiceError(f"LLM server {ep.url} sent a body that is not JSON: {exc.msg}{tries}")
        if isinstance(exc, MalformedResponse):
            return LLMServiceError(f"LLM server {ep.url} sent an answer without the expected fields: {exc}{tries}")
        if is_transient(exc):
            return LLMServiceError(f"LLM server {ep.url} answered {exc}{tries}")
        if isinstance(exc, HTTPStatusError) and exc.status in REJECTED_STATUSES:
            return LLMRequestRejected(f"LLM server {ep.url} answered {exc}")
        return LLMError(f"LLM server {ep.url} answered {exc}")

    async def chat(
        self,
        messages: list[dict],
        *,
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int | None = None,
        json_schema: dict | None = None,
        top_logprobs: int = 0,
        prefix_break: tuple[int, int] | None = None,
    ) -> ChatResult:
        """`prefix_break` = (message, char): where the chat's head shared with other calls ends,
        told to the embedded server only (its `prefix_break`). The cache key leaves it out: the
        answers with and without it differ by llama.cpp's batch-shape noise only."""
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
        key = request_key("chat", kwargs) if self.cache is not None else ""  # cache off: no hashing
        if (hit := self._cached(key)) is not None:
            return ChatResult(hit["text"], hit["finish_reason"], hit["top"])
        try:
            body = kwargs
            if prefix_break is not None and self.prefix_break:
                body = dict(kwargs, prefix_break={"message": prefix_break[0], "char": prefix_break[1]})
            result = await self._call("POST", "/chat/completions", body,
                                      lambda a: _parse_chat(a, top_logprobs))
        except LLMError as exc:
            # Some servers reject response_format; fall back to prompting alone, once, loudly.
            if "response_format" in kwargs and "response_format" in str(exc):
                log.warning("server rejects response_format=json_schema; validating JSON ourselves")
                self.json_schema_supported = False
                return await self.chat(messages, temperature=temperature, max_tokens=max_tokens,
                                       seed=seed, json_schema=None, top_logprobs=top_logprobs,
                                       prefix_break=prefix_break)
            raise
        self._store(key, "chat", {"text": result.text, "finish_reason": result.finish_reason,
                                  "top": result.first_token_top})
        return result

    async def prompt_logprobs(self, prompt: str, from_char: int = 0) -> PromptLogprobs:
        """Log-probs of the prompt's tokens, via completions `echo` + `logprobs` (vLLM's way).

        `from_char`: only the tokens ending after this character are read. The embedded server
        is told (`prompt_logprobs_from`) and computes no logits for the others, which come back
        without log-probs; other servers return them all."""
        return (await self.prompt_logprobs_many([prompt], [from_char]))[0]

    async def prompt_logprobs_many(self, prompts: list[str], from_chars: list[int],
                                   prefix_breaks: list[int] | None = None) -> list[PromptLogprobs]:
        """`prompt_logprobs` of several prompts in ONE completions request (a list `prompt`, as
        OpenAI's API and vLLM take it), so that prompts sharing a prefix compute it once: the
        embedded server evaluates the list under one hold of its prefix cache, vLLM's automatic
        prefix caching sees them together. A server that refuses a list gets them one by one
        from then on. Each answer is cached under its single prompt's key. `prefix_breaks`: the
        character where each prompt's shared head ends, told to the embedded server only (its
        `prefix_break`; the cache key leaves it out, as for chats)."""
        requests = [_echo_request(self.settings.model, p) for p in prompts]
        # the key leaves the hint out: an answer that covers the tokens asked for serves any caller
        keys = [request_key("completions", r) if self.cache is not None else "" for r in requests]
        # an answer computed for a later span lacks this one's first tokens
        hits = [self.cache.get(k) if self.cache is not None else None for k in keys]
        if all(h is not None and h.get("from_char", 0) <= f for h, f in zip(hits, from_chars)):
            self.usage.cache_hits += len(hits)
            return [PromptLogprobs(h["tokens"], h["logprobs"], h["offsets"]) for h in hits]
        if len(prompts) > 1 and not self.prompt_lists_supported:
            return [await self.prompt_logprobs(p, f) for p, f in zip(prompts, from_chars)]
        body = dict(requests[0], prompt=prompts[0] if len(prompts) == 1 else list(prompts))
        sent_from = list(from_chars) if self.prompt_logprobs_from else [0] * len(prompts)
        if any(sent_from):
            body["prompt_logprobs_from"] = sent_from[0] if len(prompts) == 1 else sent_from
        if prefix_breaks is not None and self.prefix_break:
            body["prefix_break"] = prefix_breaks[0] if len(prompts) == 1 else list(prefix_breaks)
        try:
            answers = await self._call("POST", "/completions", body,
                                       lambda a: _parse_echo_choices(a, len(prompts)))
        except LLMRequestRejected:
            if len(prompts) == 1:
                raise
            # one by one: a prompt the server rejects alone raises its own error here; if they
            # all pass, it was the list the server refused
            each = [await self.prompt_logprobs(p, f) for p, f in zip(prompts, from_chars)]
            log.warning("%s refuses a list of prompts in one request: sending them one by one "
                        "(prompts sharing a prefix may compute it twice)", self.base_url)
            self.prompt_lists_supported = False
            return each
        results = []
        for prompt, lp, key, start in zip(prompts, answers, keys, sent_from):
            if lp is None or not lp.get("token_logprobs") or lp.get("text_offset") is None:
                raise LLMError(f"{self.base_url} returned no prompt log-probs for echo=True")
            # Keep the prompt's tokens only (the one generated token follows them).
            offsets = lp["text_offset"]
            n = sum(1 for off in offsets if off < len(prompt))
            result = PromptLogprobs(list(lp["tokens"][:n]), list(lp["token_logprobs"][:n]), list(offsets[:n]))
            self._store(key, "completions", {"tokens": result.tokens, "logprobs": result.logprobs,
                                             "offsets": result.offsets, "from_char": start})
            results.append(result)
        return results

    def _cached(self, key: str, usable=lambda hit: True) -> dict | None:
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is None or not usable(hit):
            return None
        self.usage.cache_hits += 1
        return hit

    def _store(self, key: str, kind: str, body: dict) -> None:
        if self.cache is not None:
            self.cache.put(key, kind, body)

    async def supports_prompt_logprobs(self) -> bool:
        """One cheap probe: does completions `echo` return usable prompt log-probs?"""
        try:
            scores = await self.prompt_logprobs("Passage: probe.\nQuery: probe")
        except LLMServiceError:
            raise  # an outage says nothing about the server's features: judging RC-only would be wrong
        except LLMError as exc:
            log.warning("no prompt log-probs from %s (%s): judging runs RC-only", self.base_url, exc)
            return False
        return any(lp is not None and math.isfinite(lp) for lp in scores.logprobs)

    async def check_reachable(self) -> None:
        """Fail fast, with the URL and without the key, when no endpoint is there.

        Every endpoint is probed; an unreachable one is named in a warning and set aside, and
        the run goes on as long as one answers."""
        async def probe(ep: Endpoint) -> LLMError | None:
            try:
                await ep.request("GET", "/models", None, min(self.settings.timeout_s, 30.0))
            except (TransportError, HTTPStatusError, MalformedResponse, json.JSONDecodeError) as exc:
                if isinstance(exc, TransportError):
                    if isinstance(exc, ConnectFailed):
                        ep.mark_down(str(exc))
                    return self._wrap(exc, ep)
                # some servers have no /models; reaching them is enough
                log.info("GET /models on %s failed (%s); continuing", ep.url, exc)
            return None

        errors = await asyncio.gather(*(probe(ep) for ep in self.endpoints))
        if all(errors):
            if len(errors) == 1:
                raise errors[0]  # type: ignore[misc]
            raise LLMUnreachable("no LLM endpoint answered: " + "; ".join(map(str, errors)))


def _parse_chat(answer: dict, top_logprobs: int) -> ChatResult:
    try:
        choice = answer["choices"][0]
        text = choice["message"].get("content") or ""
        top: dict[str, float] = {}
        content = (choice.get("logprobs") or {}).get("content") if top_logprobs else None
        if content:
            top = {alt["token"]: float(alt["logprob"]) for alt in content[0].get("top_logprobs") or []}
        return ChatResult(text, choice.get("finish_reason"), top)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedResponse(f"chat answer without choices[0].message ({type(exc).__name__}: {exc})") from None


def _echo_request(model: str, prompt: str) -> dict:
    """A prompt-log-probs request (its cache key): echo the prompt, generate one token."""
    return dict(model=model, prompt=prompt, max_tokens=1, temperature=0.0, echo=True, logprobs=1)


def _parse_echo_choices(answer: dict, n: int) -> list[dict | None]:
    """The `logprobs` of each of `n` prompts' choices, in prompt order (choices carry `index`)."""
    try:
        choices = answer["choices"]
        if not isinstance(choices, list) or len(choices) != n:
            raise TypeError(f"{len(choices) if isinstance(choices, list) else 'no'} choices for {n} prompts")
        ordered = sorted(choices, key=lambda c: c.get("index", 0)) if n > 1 else choices
        return [c.get("logprobs") for c in ordered]
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise MalformedResponse(f"completions answer without choices ({type(exc).__name__}: {exc})") from None
