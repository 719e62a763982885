"""End-to-end checks of the embedded llama.cpp server through the real `openai` client.

Needs the real 0.5B model on CPU (about a minute on 2 cores): `pytest -m llm`.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

pytestmark = pytest.mark.llm

EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889 as the entrance arch to the 1889 World's Fair."
)
UNRELATED = (
    "Photosynthesis is the process by which green plants and some other organisms use sunlight "
    "to synthesize foods from carbon dioxide and water, generating oxygen as a by-product."
)
QUERY = "when was the eiffel tower built"
# Short, so the constrained answer is short: a grammar-constrained token costs the 0.5B several
# free ones on 2 cores, and this test checks validity, not length.
EIFFEL_SHORT = "The Eiffel Tower in Paris was built from 1887 to 1889."


@pytest.fixture(scope="module")
def server():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (run `make setup`)")
    from gecko_factory.llm.embedded import EmbeddedServer
    from gecko_factory.llm.model_files import ModelFileError, ensure_model
    from gecko_factory.llm.settings import LLMSettings

    try:
        model = ensure_model()
    except ModelFileError as exc:
        pytest.skip(f"embedded model parts unavailable: {exc}")
    with EmbeddedServer(LLMSettings(_env_file=None), model_path=model) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.base_url, api_key="unused", timeout=300, max_retries=0)


def _score(client, model: str, passage: str, query: str):
    prompt = f"Passage: {passage}\nQuery: {query}"
    resp = client.completions.create(
        model=model, prompt=prompt, max_tokens=0, echo=True, logprobs=0,
        extra_body={"prompt_logprobs": 0},
    )
    lp = resp.choices[0].logprobs
    assert "".join(lp.tokens) == prompt
    start = len(prompt) - len(query)
    # every token whose character span overlaps the query's span (the one carrying the
    # query's leading space starts just before it)
    total = sum(
        v for tok, off, v in zip(lp.tokens, lp.text_offset, lp.token_logprobs)
        if v is not None and off < len(prompt) and off + len(tok) > start
    )
    return total, resp


def test_the_server_is_out_of_reach_of_a_terminal_ctrl_c(server):
    """Its own session, so a Ctrl-C to the program's process group does not reach it."""
    import os

    assert os.getsid(server._proc.pid) == server._proc.pid != os.getsid(0)


def test_models_lists_the_embedded_model(client, server):
    ids = [m.id for m in client.models.list().data]
    assert ids == [server.model_name]


def test_chat_json_schema_returns_valid_json(client, server):
    schema = {
        "type": "object",
        "properties": {"task": {"type": "string"}, "query": {"type": "string"}},
        "required": ["task", "query"],
        "additionalProperties": False,
    }
    resp = client.chat.completions.create(
        model=server.model_name,
        messages=[
            {"role": "system", "content": "You write search tasks and queries as JSON."},
            {"role": "user", "content": f"Write a retrieval task and a query for: {EIFFEL_SHORT}"},
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "tq", "schema": schema}},
        temperature=0.0, seed=7, max_tokens=96,
    )
    data = json.loads(resp.choices[0].message.content)
    assert isinstance(data["task"], str) and isinstance(data["query"], str)
    assert resp.usage.completion_tokens > 0
    assert resp.choices[0].finish_reason in {"stop", "length"}
    # the server's profile counts the constrained tokens (grammar_last.py), the end token too
    import urllib.request

    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/stats", timeout=30) as r:
        gen = json.loads(r.read())[server.model_name]["gen"]
    assert gen["constrained_tokens"] >= resp.usage.completion_tokens
    assert 0 <= gen["grammar_resampled"] <= gen["constrained_tokens"]


def test_echo_logprobs_are_aligned(client, server):
    own, resp = _score(client, server.model_name, EIFFEL, QUERY)
    other, _ = _score(client, server.model_name, UNRELATED, QUERY)
    assert own > other + 5, (own, other)

    lp = resp.choices[0].logprobs
    assert lp.token_logprobs[0] is None
    pairs = [i for i in range(1, len(lp.tokens)) if lp.tokens[i] == "iff" and lp.tokens[i - 1] == " e"]
    assert pairs, f"no ' e'+'iff' in {lp.tokens}"
    assert lp.token_logprobs[pairs[-1]] > -2.0


def test_vllm_prompt_logprobs_agree_with_legacy(client, server):
    _, resp = _score(client, server.model_name, EIFFEL, QUERY)
    choice = resp.choices[0]
    plp = choice.model_extra["prompt_logprobs"]
    legacy = choice.logprobs.token_logprobs
    assert plp[0] is None and len(plp) == len(legacy)
    for entry, want in zip(plp[1:], legacy[1:]):
        (info,) = entry.values()  # prompt_logprobs=0: only the actual token
        assert math.isclose(info["logprob"], want, abs_tol=1e-4)
        assert info["rank"] >= 1


def test_completion_generates_and_is_reproducible(client, server):
    kw = {"model": server.model_name, "prompt": "The capital of France is", "max_tokens": 4,
          "temperature": 0.8, "seed": 3, "logprobs": 2}
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text
    assert a.usage.completion_tokens == len(a.choices[0].logprobs.tokens) <= 4
    assert all(v <= 0 for v in a.choices[0].logprobs.token_logprobs)


def test_prompt_longer_than_context_is_a_400(client, server):
    import openai

    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model=server.model_name, prompt="word " * 5000, max_tokens=0)


def test_prompt_logprobs_from_scores_only_the_span_and_agrees_with_all_rows(client, server):
    """The extension computes the logits of the tokens ending after the character only: the
    others come back null, the span's sum is the all-rows sum (to batching noise)."""
    own, full = _score(client, server.model_name, EIFFEL, QUERY)
    prompt = f"Passage: {EIFFEL}\nQuery: {QUERY}"
    start = len(prompt) - len(QUERY)
    resp = client.completions.create(
        model=server.model_name, prompt=prompt, max_tokens=0, echo=True, logprobs=0,
        extra_body={"prompt_logprobs": 0, "prompt_logprobs_from": start})
    lp = resp.choices[0].logprobs
    assert lp.tokens == full.choices[0].logprobs.tokens
    ends = lp.text_offset[1:] + [len(prompt)]
    scored = [i for i, v in enumerate(lp.token_logprobs) if v is not None]
    assert scored == [i for i, end in enumerate(ends) if end > start and i > 0]
    assert 0 < len(scored) < len(lp.tokens) // 3
    plp = resp.choices[0].model_extra["prompt_logprobs"]
    assert [i for i, e in enumerate(plp) if e is not None] == scored
    assert math.isclose(sum(lp.token_logprobs[i] for i in scored), own, abs_tol=0.02)


def test_chat_logprobs_are_the_next_token_logprobs_of_the_rendered_chat(client, server):
    """A chat with log-probs (the RC judge) is scored from the last row of the model's own chat
    template: the same numbers as a completion of that template's text written out."""
    system, user = "Answer Yes or No.", f"Is this passage about Paris? {EIFFEL}"
    chat = client.chat.completions.create(
        model=server.model_name, messages=[{"role": "system", "content": system},
                                           {"role": "user", "content": user}],
        temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=5)
    top = {t.token: t.logprob for t in chat.choices[0].logprobs.content[0].top_logprobs}
    assert len(top) == 5 and max(top, key=top.get) == chat.choices[0].message.content
    chatml = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
              "<|im_start|>assistant\n")  # Qwen2.5's template for these two messages
    comp = client.completions.create(model=server.model_name, prompt=chatml, max_tokens=1,
                                     temperature=0.0, logprobs=5)
    want = comp.choices[0].logprobs.top_logprobs[0]
    assert set(want) == set(top)
    for token, value in want.items():
        assert math.isclose(top[token], value, abs_tol=1e-3), (token, top[token], value)


def test_a_scored_chat_longer_than_the_context_is_a_400(client, server):
    import openai

    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.chat.completions.create(model=server.model_name, messages=[
            {"role": "user", "content": "word " * 5000}], logprobs=True, top_logprobs=2)


def test_a_list_of_prompts_computes_their_shared_passage_once_and_scores_each_as_alone(client, server):
    """The shared-prefix judge's request: QL and RC prompts of one candidate in one completions
    call. The second prompt reuses the passage's whole chunks from the first, and each prompt's
    log-probs are bit for bit those of a request holding it alone (the cache's chunk rule)."""
    import httpx

    from gecko_factory.judge import query_span, shared_prefix_prompts

    passage = " ".join([EIFFEL, UNRELATED] * 4)  # ~360 tokens: two whole chunks of 128 and more
    ql, rc = shared_prefix_prompts(passage, QUERY)
    starts = [query_span(ql, QUERY)[0], len(rc) - len("Yes")]

    def stats() -> dict:
        return httpx.get(server.base_url.removesuffix("/v1") + "/stats").json()[server.model_name]["score"]

    def score(prompt, start):
        return client.completions.create(model=server.model_name, prompt=prompt, max_tokens=0,
                                         echo=True, logprobs=0,
                                         extra_body={"prompt_logprobs_from": start})

    before = stats()
    both = score([ql, rc], starts)
    after = stats()
    sent = after["prompt_tokens"] - before["prompt_tokens"]
    computed = after["computed_tokens"] - before["computed_tokens"]
    assert [c.index for c in both.choices] == [0, 1] and both.usage.prompt_tokens == sent
    assert sent - computed >= 256  # the RC prompt took two whole chunks of the passage from QL
    for choice, prompt, start in zip(both.choices, [ql, rc], starts):
        score(UNRELATED, None)  # another prompt in between: nothing of the passage is cached
        alone = score(prompt, start).choices[0].logprobs
        assert choice.logprobs.tokens == alone.tokens
        assert choice.logprobs.token_logprobs == alone.token_logprobs


def test_a_break_after_the_passage_line_lets_the_second_prompt_reuse_all_of_it(client, server):
    """With `prefix_break` at the end of the shared passage line (judge.shared_head), the head's
    batches end there: the RC prompt computes only what follows the passage, whatever its length
    against the 128-token chunks, and each prompt scores bit for bit as when it is sent alone
    with the same break (the same batches)."""
    import httpx

    from gecko_factory.judge import query_span, shared_head, shared_prefix_prompts

    ql, rc = shared_prefix_prompts(" ".join([EIFFEL, UNRELATED]), QUERY)  # under one chunk
    starts, head = [query_span(ql, QUERY)[0], len(rc) - len("Yes")], shared_head(ql, rc)
    url = server.base_url.removesuffix("/v1") + "/stats"

    def score(prompt, start, brk):
        before = httpx.get(url).json()[server.model_name]["score"]
        got = client.completions.create(model=server.model_name, prompt=prompt, max_tokens=0,
                                        echo=True, logprobs=0,
                                        extra_body={"prompt_logprobs_from": start, "prefix_break": brk})
        after = httpx.get(url).json()[server.model_name]["score"]
        return got, after["computed_tokens"] - before["computed_tokens"]

    score(UNRELATED, None, None)  # nothing of the passage in the live context
    both, computed = score([ql, rc], starts, [head, head])
    n_ql, n_rc = (len(c.logprobs.tokens) for c in both.choices)
    n_head = sum(1 for off in both.choices[0].logprobs.text_offset if off < head)
    assert n_head > 60 and computed == n_ql + n_rc - n_head  # the RC prompt computed no passage token
    for choice, prompt, start in zip(both.choices, [ql, rc], starts):
        score(UNRELATED, None, None)
        alone = score(prompt, start, head)[0].choices[0].logprobs
        assert choice.logprobs.tokens == alone.tokens
        assert choice.logprobs.token_logprobs == alone.token_logprobs


def test_a_list_needs_one_logprobs_start_per_prompt(client, server):
    import openai

    with pytest.raises(openai.BadRequestError, match="prompt_logprobs_from"):
        client.completions.create(model=server.model_name, prompt=["a b", "c d"], max_tokens=0,
                                  echo=True, logprobs=0, extra_body={"prompt_logprobs_from": [1]})
    with pytest.raises(openai.BadRequestError, match="prefix_break"):
        client.completions.create(model=server.model_name, prompt=["a b", "c d"], max_tokens=0,
                                  echo=True, logprobs=0,
                                  extra_body={"prompt_logprobs_from": [1, 1], "prefix_break": [1]})


def test_rc_chats_of_one_query_compute_their_head_once_and_score_as_when_computed(server):
    """The two-prompt judge's RC chats of one seed share the instruction and the query (their
    head, `judge.relevance_head`). Through the factory's client, the server keeps the head's KV
    and later chats compute only the rest, also when a QL prompt came in between; the answer of
    a chat whose head was restored is bit for bit the answer of the same chat computing it."""
    import asyncio

    import httpx

    from gecko_factory.judge import _query_likelihood, _relevance, relevance_messages
    from gecko_factory.llm.client import LLMClient
    from gecko_factory.llm.settings import LLMSettings

    query = "who designed the tower on the champ de mars"  # no other test's head
    stats_url = server.base_url.removesuffix("/v1") + "/stats"

    def score_stats() -> tuple[int, int, int]:
        s = httpx.get(stats_url).json()[server.model_name]["score"]
        return s["prompt_tokens"], s["computed_tokens"], s["heads_restored"]

    async def go(hint: bool) -> tuple[list[float], list[tuple[int, int, int]]]:
        client = LLMClient(LLMSettings(_env_file=None, model=server.model_name, prefix_break=hint),
                           server.base_url)
        rcs, costs = [], []
        try:
            for passage in [EIFFEL_SHORT, UNRELATED, EIFFEL_SHORT]:
                before = score_stats()
                rcs.append(await _relevance(client, query, passage))
                after = score_stats()
                costs.append(tuple(a - b for a, b in zip(after, before)))
                await _query_likelihood(client, query, EIFFEL)  # another prompt in between
        finally:
            await client.aclose()
        return rcs, costs

    rcs, costs = asyncio.run(go(True))
    (sent0, computed0, _), (sent1, computed1, _), (sent2, computed2, _) = costs
    assert computed0 == sent0  # the head's first use computes it
    head = sent0 - computed2
    assert head >= 20 and computed1 == sent1 - head  # later chats restore it
    assert [restored for *_, restored in costs] == [0, 1, 1]  # and /stats counts them
    assert rcs[2] == rcs[0]  # restored or computed: the same answer, bit for bit
    plain, plain_costs = asyncio.run(go(False))  # not told: every chat computes all of it
    assert all(sent == computed and not restored for sent, computed, restored in plain_costs)
    # one batch instead of two: llama.cpp's batch-shape noise (0.03 nats seen with the 0.5B);
    # a head restored into the wrong place would be off by nats
    assert plain == pytest.approx(rcs, abs=0.1)
    assert relevance_messages(query, EIFFEL_SHORT)[1]["content"].startswith(f"Query: {query}\n")
