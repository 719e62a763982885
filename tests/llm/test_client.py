import asyncio

import pytest
from pydantic import SecretStr

from gecko_factory.llm.client import (LLMClient, LLMError, LLMRequestRejected, LLMServiceError, LLMUnreachable,
                                      PromptLogprobs)
from gecko_factory.llm.settings import LLMSettings
from gecko_factory.testing.launch import free_port

KEY = "sk-test-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def test_span_sums_overlapping_tokens():
    # "Query: when was it" with the leading space glued to each word, as BPE does.
    scores = PromptLogprobs(["Query", ":", " when", " was", " it"], [None, -1.0, -2.0, -3.0, -4.0],
                            [0, 5, 6, 11, 15])
    assert scores.span(7, 18) == -9.0  # "when was it"
    assert scores.span(16, 18) == -4.0
    with pytest.raises(LLMError):
        scores.span(0, 3)  # only the first token, which has no log-prob


def test_prompt_logprobs_through_real_http(scripted_server):
    async def go():
        client = LLMClient(LLMSettings(model="scripted"), scripted_server.base_url)
        try:
            prompt = "Passage: tower in paris\nQuery: tower paris\nDoes the passage answer the query? Answer: Yes"
            scores = await client.prompt_logprobs(prompt)
            assert "".join(scores.tokens) == prompt
            assert await client.supports_prompt_logprobs()
            return scores, client.usage
        finally:
            await client.aclose()

    scores, usage = asyncio.run(go())
    assert usage.calls == 2 and usage.prompt_tokens > 0


def test_prompt_logprobs_from_is_sent_where_allowed_and_a_narrower_cached_answer_is_not_reused(
        scripted_server, tmp_path):
    """The span hint reaches the server only where the settings allow it (the embedded server's
    extension; other servers may refuse unknown fields). A cached answer made with a hint lacks
    the tokens before it, so a caller reading from an earlier character asks again."""
    from gecko_factory.llm.cache import RequestCache

    prompt = "Passage: tower in paris\nQuery: tower paris"
    start = prompt.index("tower paris")

    async def go(hint: bool):
        settings = LLMSettings(_env_file=None, model="scripted", prompt_logprobs_from=hint)
        client = LLMClient(settings, scripted_server.base_url, cache=RequestCache(tmp_path / f"{hint}.sqlite"))
        try:
            narrow = await client.prompt_logprobs(prompt, from_char=start)
            again = await client.prompt_logprobs(prompt, from_char=start + 1)  # inside: a hit
            wide = await client.prompt_logprobs(prompt, from_char=0)
            return narrow, again, wide, client.usage
        finally:
            await client.aclose()

    narrow, again, wide, usage = asyncio.run(go(True))
    assert narrow.logprobs[:3] == [None, None, None] and narrow.span(start, len(prompt)) < 0
    assert again == narrow and usage.cache_hits == 1 and usage.calls == 2
    assert all(lp is not None for lp in wide.logprobs[1:])
    assert wide.span(start, len(prompt)) == narrow.span(start, len(prompt))
    narrow, _, wide, usage = asyncio.run(go(False))  # not sent: the server returns every row
    assert all(lp is not None for lp in narrow.logprobs[1:]) and usage.calls == 1


@pytest.mark.parametrize("lists", [True, False])
def test_several_prompts_go_in_one_request_or_one_by_one_where_a_list_is_refused(lists, tmp_path):
    """A list `prompt` is one request (what lets a prefix cache see two prompts together); a
    server that answers a list with a 400 gets the prompts one by one, with the same scores,
    and is not sent a list again. Each answer is cached under its own prompt."""
    from gecko_factory.llm.cache import RequestCache
    from gecko_factory.testing.launch import ScriptedServer

    prompts = ["Passage: tower in paris\nA search query this passage answers: tower paris\n",
               "Passage: tower in paris\nQuery: tower paris\nAnswer: Yes"]
    starts = [prompts[0].index("tower paris"), len(prompts[1]) - 3]

    async def go(url):
        settings = LLMSettings(_env_file=None, model="scripted", prompt_logprobs_from=True)
        client = LLMClient(settings, url, cache=RequestCache(tmp_path / f"{lists}.sqlite"))
        try:
            many = await client.prompt_logprobs_many(prompts, starts)
            again = await client.prompt_logprobs_many(prompts, starts)  # from the cache
            single = [await client.prompt_logprobs(p, f) for p, f in zip(prompts, starts)]  # cached too
            return many, again, single, client.usage, client.prompt_lists_supported
        finally:
            await client.aclose()

    with ScriptedServer(prompt_lists=lists) as srv:
        many, again, single, usage, supported = asyncio.run(go(srv.base_url))
        sent = srv.stats()["completions"]
    assert many == again == single
    assert [s.span(f, len(p)) for s, p, f in zip(many, prompts, starts)] == [
        s.span(f, len(p)) for s, p, f in zip(single, prompts, starts)]
    assert many[1].logprobs[:-1] == [None] * (len(many[1].logprobs) - 1)  # the hint reached it
    assert usage.cache_hits == 4
    # a list: one request; refused: the list, then each prompt (and never a list again)
    assert (sent, usage.calls, supported) == ((1, 1, True) if lists else (3, 2, False))


def test_unreachable_server_error_names_url_not_key():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    settings = LLMSettings(api_key=SecretStr(KEY), max_retries=1, backoff_s=0.01)

    async def go():
        client = LLMClient(settings, url)
        try:
            await client.check_reachable()
        finally:
            await client.aclose()

    with pytest.raises(LLMUnreachable) as info:
        asyncio.run(go())
    assert url in str(info.value) and KEY not in str(info.value)
    assert KEY not in repr(settings) and KEY not in str(settings.public_dict())


@pytest.mark.parametrize("transport", ["fast", "openai"])
def test_every_transient_fault_is_retried_and_a_400_is_not(transport):
    # Every request's first attempt fails (429, 500, a hang past the timeout, a malformed or a
    # truncated body); the retry of the same request succeeds.
    from gecko_factory.testing.launch import ScriptedServer

    prompts = [f"Passage: tower number {i}\nQuery: tower {i}\nAnswer: Yes" for i in range(25)]
    settings = LLMSettings(_env_file=None, model="scripted", timeout_s=0.4, backoff_s=0.01, max_retries=2,
                           transport=transport)

    async def go(url):
        client = LLMClient(settings, url)
        try:
            return await asyncio.gather(*(client.prompt_logprobs(p) for p in prompts),
                                        return_exceptions=True), client.usage
        finally:
            await client.aclose()

    with ScriptedServer(fault_rate=1.0, fault_sleep_s=1.0) as srv:
        scores, usage = asyncio.run(go(srv.base_url))
        faults = {k: v for k, v in srv.stats().items() if k.startswith("fault_")}
    assert ["".join(s.tokens) for s in scores] == prompts
    assert set(faults) == {"fault_429", "fault_500", "fault_timeout", "fault_malformed", "fault_truncated"}
    assert usage.retries == usage.failed_calls == sum(faults.values()) == len(prompts)

    with ScriptedServer(prompt_logprobs=False) as srv:  # answers 400 to echo: not transient
        errors, usage = asyncio.run(go(srv.base_url))
        assert srv.calls() == len(prompts) and usage.retries == 0  # each asked once
    # refused for its content: one item's skip, not an outage (the shard goes on)
    assert all(isinstance(e, LLMRequestRejected) and f"{srv.base_url} answered 400" in str(e) for e in errors)


def test_an_outage_beyond_the_retries_is_a_service_error_not_a_rejected_request():
    """What decides between 'skip this seed' and 'fail the shard': the error's class."""
    from gecko_factory.testing.launch import ScriptedServer

    settings = LLMSettings(_env_file=None, model="scripted", backoff_s=0.01, max_retries=1)

    async def go(url):
        client = LLMClient(settings, url)
        try:
            return await asyncio.gather(client.chat([{"role": "user", "content": "hi"}]),
                                        client.prompt_logprobs("Passage: a\nQuery: b"), return_exceptions=True)
        finally:
            await client.aclose()

    with ScriptedServer() as srv:
        srv.stop()  # connection refused
        errors = asyncio.run(go(srv.base_url))
    assert all(isinstance(e, LLMUnreachable) and isinstance(e, LLMServiceError) for e in errors)
    assert all("(2 attempts)" in str(e) and not isinstance(e, LLMRequestRejected) for e in errors)
    with ScriptedServer(fault_rate=1.0) as srv:  # every first attempt fails, and no retry is allowed
        settings = LLMSettings(_env_file=None, model="scripted", timeout_s=0.5, max_retries=0)
        errors = asyncio.run(go(srv.base_url))
    assert all(isinstance(e, LLMServiceError) for e in errors), errors


def test_cache_batches_writes_but_reads_its_pending_answers(tmp_path):
    import sqlite3

    from gecko_factory.llm.cache import FLUSH_ROWS, RequestCache

    path = tmp_path / "llm.sqlite"
    cache = RequestCache(path)

    def on_disk() -> int:
        with sqlite3.connect(path) as con:
            return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    cache.put("a", "chat", {"text": "x"})
    assert cache.get("a") == {"text": "x"}  # served before it is committed
    cache.flush()
    assert on_disk() == 1  # another connection (another process) sees it once flushed
    for i in range(FLUSH_ROWS):
        cache.put(f"k{i}", "chat", {"text": str(i)})
    assert on_disk() >= FLUSH_ROWS  # a full batch is committed at once
    cache.put("last", "chat", {"text": "z"})
    cache.close()
    assert on_disk() == FLUSH_ROWS + 2 and RequestCache(path).get("last") == {"text": "z"}


@pytest.mark.parametrize("transport", ["fast", "openai"])
@pytest.mark.parametrize("header", ["1.2", "DATE"])
def test_a_429_waits_as_long_as_its_retry_after_says(transport, header):
    """A rate limit that says when to come back (Retry-After: seconds or an HTTP-date) is retried
    no sooner, whatever the client's own backoff; a server on loopback answers the first call 429
    and the second with a chat answer, and records when each arrived."""
    import email.utils
    import json
    import time

    arrivals: list[float] = []
    ok = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()

    async def handle(reader, writer):
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                break  # the client closed its connection, or the test is over
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            arrivals.append(time.monotonic())
            if len(arrivals) == 1:
                when = (email.utils.formatdate(time.time() + 2, usegmt=True) if header == "DATE"
                        else header)
                body = b'{"error": {"message": "slow down", "type": "rate_limit"}}'
                writer.write(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                             b"Retry-After: " + when.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(ok) + ok)
            await writer.drain()
        writer.close()

    async def go():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = LLMSettings(_env_file=None, model="m", backoff_s=0.01, max_retries=2, transport=transport)
        client = LLMClient(settings, f"http://127.0.0.1:{port}/v1")
        try:
            answer = await client.chat([{"role": "user", "content": "hi"}])
            return answer, client.usage
        finally:
            await client.aclose()
            server.close()

    answer, usage = asyncio.run(go())
    assert answer.text == "fine" and usage.retries == 1 and len(arrivals) == 2
    # an HTTP-date has whole seconds: 2 s ahead is at least 1 s away when it is read
    assert arrivals[1] - arrivals[0] >= (1.0 if header == "DATE" else 1.2)
