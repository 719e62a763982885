"""Several LLM endpoints share the load; a dead one is set aside, named, and the run goes on.

Real HTTP to real scripted servers (subprocesses); nothing is mocked.
"""

import asyncio
import logging
import time

import pytest
from pydantic import SecretStr

from gecko_factory.llm.client import LLMClient, LLMUnreachable
from gecko_factory.llm.settings import LLMSettings
from gecko_factory.synthesize import OUTPUT_SCHEMA, build_messages
from gecko_factory.testing.launch import ScriptedServer, free_port

KEY = "sk-test-ENDPOINTS0123456789abcdefghijklmnop"
PASSAGES = [f"The {w} bridge over the river was built in {1800 + i} by engineers from {w}ville."
            for i, w in enumerate(["iron", "stone", "wooden", "rope", "steel", "glass", "brick", "chain"])]


def settings(**kw) -> LLMSettings:
    return LLMSettings(_env_file=None, model="scripted", api_key=SecretStr(KEY), **kw)


async def workload(client: LLMClient) -> list:
    """Synthesis-like and judge-like calls, interleaved: what a shard sends."""
    async def one(i: int, text: str):
        chat = await client.chat(build_messages("question answering", text), temperature=0.5,
                                 max_tokens=64, seed=i, json_schema=OUTPUT_SCHEMA)
        scores = await client.prompt_logprobs(f"Passage: {text}\nQuery: bridge river\nAnswer: Yes")
        return chat.text, scores.logprobs

    return await asyncio.gather(*(one(i, t) for i, t in enumerate(PASSAGES * 3)))


def run(urls: str, **kw):
    async def go():
        client = LLMClient(settings(**kw), urls)
        try:
            await client.check_reachable()
            return await workload(client), client.usage, [(e.url, e.calls) for e in client.endpoints]
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def two_servers():
    with ScriptedServer(latency_ms=30) as a, ScriptedServer(latency_ms=30) as b:
        yield a, b


def test_two_endpoints_share_the_load_and_answer_like_one(two_servers):
    a, b = two_servers
    before = a.calls(), b.calls()
    single, _, _ = run(a.base_url, concurrency=4)
    both, usage, per_endpoint = run(f"{a.base_url}, {b.base_url}", concurrency=4)
    assert both == single  # same answers, whoever served them
    assert usage.calls == 2 * len(PASSAGES) * 3 and usage.failed_calls == 0
    served = a.calls() - before[0] - len(single) * 2, b.calls() - before[1]
    assert all(n >= 12 for n in served), served  # least-in-flight spreads 48 calls over both
    assert [n for _, n in per_endpoint] == list(served)


def test_concurrency_limit_holds_per_endpoint():
    with ScriptedServer(latency_ms=40) as a, ScriptedServer(latency_ms=40) as b:
        t0 = time.perf_counter()
        run(f"{a.base_url},{b.base_url}", concurrency=3)
        seconds = time.perf_counter() - t0
        peaks = a.stats()["max_in_flight"], b.stats()["max_in_flight"]
        t0 = time.perf_counter()
        run(a.base_url, concurrency=3)  # the same calls on one endpoint, in the same conditions
        one_endpoint = time.perf_counter() - t0
    assert peaks == (3, 3)  # each endpoint full, neither over its own limit
    # Faster than one endpoint at its limit: measured beside it, not against the ideal 48 x 40 ms
    # / 3 alone, which a loaded 2-core CI machine missed (0.88 s against 0.64 s).
    assert seconds < one_endpoint and seconds < 48 * 0.04 / 3 * 1.5, (seconds, one_endpoint)


def test_dead_endpoint_is_named_and_the_run_goes_on(two_servers, caplog):
    a, _ = two_servers
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    single, _, _ = run(a.base_url, concurrency=4)
    with caplog.at_level(logging.WARNING, logger="gecko_factory.llm"):
        both, usage, per_endpoint = run(f"{dead},{a.base_url}", concurrency=4, backoff_s=0.01)
    assert both == single
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(dead in w and "unreachable" in w for w in warnings), warnings
    assert KEY not in caplog.text
    assert dict(per_endpoint)[a.base_url] >= 2 * len(PASSAGES) * 3


def test_all_endpoints_dead_names_each_url_not_the_key():
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    with pytest.raises(LLMUnreachable) as info:
        run(",".join(urls), max_retries=1, backoff_s=0.01)
    assert all(u in str(info.value) for u in urls) and KEY not in str(info.value)


def test_connection_closed_while_idle_is_reopened_without_a_failure():
    # The server drops idle keep-alive connections after 0.2 s; the client's pooled ones are
    # then stale, and the next calls must go through on fresh connections, not fail or retry.
    with ScriptedServer(keep_alive_s=0.2) as srv:
        async def go():
            client = LLMClient(settings(concurrency=4), srv.base_url)
            try:
                await workload(client)
                await asyncio.sleep(0.6)
                await workload(client)
                return client.usage
            finally:
                await client.aclose()

        usage = asyncio.run(go())
    assert usage.failed_calls == 0 and usage.retries == 0 and usage.calls == 4 * len(PASSAGES) * 3


def test_base_url_list_is_validated_and_public_dict_has_no_key(monkeypatch):
    monkeypatch.setenv("GECKO_LLM_BASE_URL", "http://a:8000/v1, http://user:pw@b:8000/v1/")
    s = LLMSettings(_env_file=None, api_key=SecretStr(KEY))
    assert s.endpoints() == ["http://a:8000/v1", "http://user:pw@b:8000/v1"]
    public = s.public_dict()
    assert public["endpoints"] == ["http://a:8000/v1", "http://b:8000/v1"]
    assert KEY not in str(public) and "pw" not in str(public)
    monkeypatch.setenv("GECKO_LLM_BASE_URL", "http://a:8000/v1,localhost:8000")
    with pytest.raises(ValueError, match="localhost:8000"):
        LLMSettings(_env_file=None)


def test_aliased_settings_take_their_field_names_from_python(monkeypatch):
    """LLMSettings(base_url=..., api_key=...) as well as the env names: a keyword that was
    silently dropped (the field took only its aliases) pointed a benchmark at the wrong server."""
    for k in ("OPENAI_BASE_URL", "GECKO_LLM_BASE_URL", "OPENAI_API_KEY", "GECKO_LLM_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    s = LLMSettings(_env_file=None, base_url="http://a:8000/v1", api_key=KEY)
    assert s.endpoints() == ["http://a:8000/v1"] and s.api_key.get_secret_value() == KEY
    assert KEY not in repr(s) and KEY not in str(s.public_dict())


def test_the_flow_over_two_endpoints_writes_what_one_writes(two_servers, small_corpus, prefect_harness,
                                                            tmp_path, monkeypatch):
    # The comma-separated list goes through the flow untouched: probe, shards, manifest.
    import polars as pl

    from flows.fret import fret_flow
    from gecko_factory.options import RunOptions

    a, b = two_servers
    monkeypatch.setenv("GECKO_LLM_MODEL", "scripted")
    monkeypatch.setenv("GECKO_LLM_CONCURRENCY", "4")
    runs = {}
    for name, urls in (("one", a.base_url), ("two", f"{a.base_url},{b.base_url}")):
        monkeypatch.setenv("OPENAI_BASE_URL", urls)
        before = b.calls()
        m = fret_flow(run_dir=str(tmp_path / name),
                      options=RunOptions(corpus=small_corpus, limit=12, candidates=4, shard_size=4,
                                         cache="off"))
        runs[name] = (m, pl.read_parquet(sorted((tmp_path / name / "shards").glob("*.parquet"))),
                      b.calls() - before)
    (m1, df1, b1), (m2, df2, b2) = runs["one"], runs["two"]
    assert b1 == 0 and b2 > 10  # the second endpoint served only the two-endpoint run
    assert df2.sort("example_id").equals(df1.sort("example_id")) and df1.height == 12
    assert m2["llm"]["endpoints"] == [a.base_url, b.base_url] and m1["llm"]["endpoints"] == [a.base_url]
    # GECKO_LLM_CONCURRENCY set: each endpoint's limit stays fixed, and the manifest says so
    assert m2["llm"]["adaptive_concurrency"] is False
    assert m2["llm"]["concurrency_limits"] == {u: {"mode": "fixed", "limit": 4} for u in (a.base_url, b.base_url)}
