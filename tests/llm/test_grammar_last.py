"""Grammar-last sampling (gecko_factory/llm/grammar_last.py) on the real 0.5B writer, against
llama-cpp-python's own grammar-first sampler on the same weights. About a minute on 2 cores."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest

pytestmark = pytest.mark.llm

SCHEMA = {"type": "object", "properties": {"task": {"type": "string"}, "query": {"type": "string"}},
          "required": ["task", "query"], "additionalProperties": False}
PASSAGES = [
    "The Eiffel Tower in Paris was built from 1887 to 1889.",
    "Photosynthesis turns carbon dioxide and water into sugar and oxygen.",
    "Insulin is a hormone made by the pancreas that lowers blood glucose.",
]


@pytest.fixture(scope="module")
def models():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (run `make setup`)")
    from llama_cpp import Llama

    from gecko_factory.llm.grammar_last import GrammarLastLlama
    from gecko_factory.llm.model_files import ModelFileError, ensure_model

    try:
        path = str(ensure_model())
    except ModelFileError as exc:
        pytest.skip(f"embedded model parts unavailable: {exc}")
    common = {"model_path": path, "n_ctx": 512, "n_threads": 2, "verbose": False}
    return Llama(**common), GrammarLastLlama(**common)


def _grammar(gbnf: str | None = None):
    from gecko_factory.llm.server_text import json_grammar
    from llama_cpp.llama_grammar import LlamaGrammar

    if gbnf is not None:
        return LlamaGrammar.from_string(gbnf, verbose=False)
    return json_grammar({"type": "json_schema", "json_schema": {"name": "tq", "schema": SCHEMA}})


def _messages(passage: str) -> list[dict]:
    return [{"role": "system", "content": "You write search tasks and queries as JSON."},
            {"role": "user", "content": f"Write a retrieval task and a query for: {passage}"}]


def test_greedy_answers_are_grammar_firsts_to_the_token(models):
    """At temperature 0 the unconstrained argmax, when the grammar allows it, is the argmax of
    the allowed tokens: the answers must be identical, and some first draws were refused (the
    0.5B opens with a Markdown fence when free)."""
    first, last = models
    resampled = 0
    for passage in PASSAGES[:1]:  # grammar-first is the slow reference (~2 min in CI): one answer
        kw = {"messages": _messages(passage), "temperature": 0.0, "max_tokens": 64, "seed": 1}
        want = first.create_chat_completion(**kw, grammar=_grammar())
        got = last.create_chat_completion(**kw, grammar=_grammar())
        assert got["choices"][0]["message"]["content"] == want["choices"][0]["message"]["content"]
        resampled += last.last_sampler.resampled
        ended = got["choices"][0]["finish_reason"] == "stop"  # the end token: sampled, not counted
        assert last.last_sampler.tokens == got["usage"]["completion_tokens"] + ended
    assert resampled > 0


def test_sampled_answers_are_valid_json_of_the_schema(models):
    """The writer's sampling (temperature 0.7): every answer parses and has exactly the schema's
    keys, though the grammar refused some first draws."""
    _, last = models
    resampled = 0
    for seed in range(3):
        out = last.create_chat_completion(messages=_messages(PASSAGES[seed % 3]), temperature=0.7,
                                          top_p=1.0, max_tokens=64, seed=seed, grammar=_grammar())
        choice = out["choices"][0]
        if choice["finish_reason"] == "length":
            continue  # cut by max_tokens: unfinished JSON whatever the sampler
        data = json.loads(choice["message"]["content"])
        assert set(data) == {"task", "query"} and all(isinstance(v, str) for v in data.values())
        resampled += last.last_sampler.resampled
    assert resampled > 0


def test_without_truncation_the_first_token_follows_the_constrained_distribution(models):
    """With no top-k/top-p/min-p cut, a grammar-last draw has the grammar-first distribution:
    p(t) + P(refused) * p(t) / P(allowed) = p(t) / P(allowed). The unconstrained favourite
    (" Paris") is refused here, so nearly every token comes from the second draw."""
    first, last = models
    gbnf = 'root ::= " Rome" | " Berlin" | " Madrid" | " Vienna"'
    kw = {"prompt": "The capital of France is", "max_tokens": 1, "temperature": 1.0,
          "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    n = 240
    want, got, resampled = Counter(), Counter(), 0
    for seed in range(n):
        want[first.create_completion(**kw, seed=seed, grammar=_grammar(gbnf))["choices"][0]["text"]] += 1
        got[last.create_completion(**kw, seed=seed, grammar=_grammar(gbnf))["choices"][0]["text"]] += 1
        resampled += last.last_sampler.resampled
    # one token of a multi-token name is a prefix of it (" B", " Ber", " Rom" ...)
    assert all(any(w.startswith(t) for w in (" Rome", " Berlin", " Madrid", " Vienna")) for t in got), got
    assert resampled > 0.8 * n  # the refused first draws: the second draw is what is tested
    for token in set(want) | set(got):
        # two samples of 240 from one distribution: 3 sigma of a difference of shares is < 0.14
        assert abs(want[token] - got[token]) / n < 0.14, (want, got)
