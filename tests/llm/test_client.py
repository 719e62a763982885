import asyncio

import pytest
from pydantic import SecretStr

from gecko_factory.llm.client import LLMClient, LLMError, LLMUnreachable, PromptLogprobs
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
