"""The real embedded LLMs (Qwen2.5-Coder GGUFs on llama.cpp: the 0.5B writer, the 1.5B judge), end to end.

Minutes on 2 cores."""

from __future__ import annotations

import asyncio
import json
import random

import polars as pl
import pytest

pytestmark = pytest.mark.llm

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is built by `make setup`")


@pytest.fixture(scope="module")
def embedded():
    from gecko_factory.llm.embedded import EmbeddedServer
    from gecko_factory.llm.settings import LLMSettings

    with EmbeddedServer(LLMSettings()) as server:
        yield server


def test_query_likelihood_prefers_the_seed(embedded):
    """On 50 (query, seed, random paragraph) triples, QL must rank the seed first in >= 90 %.

    The query is the paragraph's Wikidata description, as MODELS.md checked; scores go through
    the factory's own one-pass judge prompt and client."""
    from gecko_factory.corpus import Paragraph, sample_corpus_path
    from gecko_factory.judge import judge
    from gecko_factory.llm.client import LLMClient
    from gecko_factory.llm.settings import LLMSettings
    from gecko_factory.mine import Candidate

    entries = [e for e in json.loads(sample_corpus_path().read_text()).values() if e.get("description")]
    rng = random.Random(0)
    picks = rng.sample(range(len(entries)), 100)
    triples = [(entries[a], entries[b]) for a, b in zip(picks[:50], picks[50:])]

    async def score() -> list:
        client = LLMClient(LLMSettings(concurrency=2), embedded.base_url)
        try:
            out = []
            for seed, other in triples:
                cands = [(Candidate("seed", 1), Paragraph("seed", seed["title"], seed["extract"])),
                         (Candidate("other", 2), Paragraph("other", other["title"], other["extract"]))]
                out.append(await judge(client, seed["description"], cands, "one_pass", 600))
            return out
        finally:
            await client.aclose()

    judged = asyncio.run(score())
    ql_wins = sum(j[0].ql > j[1].ql for j in judged)
    rc_wins = sum(j[0].rc > j[1].rc for j in judged)
    print(f"\nQL ranks the seed first in {ql_wins}/50 triples, RC in {rc_wins}/50")
    assert ql_wins >= 45


def test_one_pass_ql_is_the_two_prompt_ql(embedded):
    """The one-pass prompt extends the QL prompt, so on the real server its QL must equal the
    two-prompt QL (up to the server's arithmetic), for every candidate."""
    from gecko_factory.corpus import Paragraph, sample_corpus_path
    from gecko_factory.judge import judge
    from gecko_factory.llm.client import LLMClient
    from gecko_factory.llm.settings import LLMSettings
    from gecko_factory.mine import Candidate

    entries = [e for e in json.loads(sample_corpus_path().read_text()).values() if e.get("description")][:4]
    cands = [(Candidate(str(i), i + 1), Paragraph(str(i), e["title"], e["extract"])) for i, e in enumerate(entries)]
    # a query ending in punctuation: BPE merges it with a following newline
    query = entries[0]["description"].rstrip(".") + "."

    async def both() -> tuple[list, list]:
        client = LLMClient(LLMSettings(concurrency=2), embedded.base_url)
        try:
            return (await judge(client, query, cands, "one_pass", 600),
                    await judge(client, query, cands, "two_prompt", 600))
        finally:
            await client.aclose()

    one, two = asyncio.run(both())
    assert [a.ql for a in one] == pytest.approx([b.ql for b in two], abs=0.25)


def test_the_server_profile(embedded):
    """GET /stats counts what each context of each model did, and the prefix cache shows as fewer
    tokens computed than sent (bench/embedded.py reads these figures)."""
    import urllib.request

    from gecko_factory.corpus import sample_corpus_path
    from gecko_factory.llm.settings import EMBEDDED_MODEL_NAME

    root = embedded.base_url.removesuffix("/v1")

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(root + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())

    def stats() -> dict:
        with urllib.request.urlopen(root + "/stats", timeout=30) as r:
            return json.loads(r.read())

    text = " ".join(e["extract"] for e in list(json.loads(sample_corpus_path().read_text()).values())[:6])
    before = stats()
    assert set(before) == {EMBEDDED_MODEL_NAME}  # this fixture's server: the writer alone
    assert set(before[EMBEDDED_MODEL_NAME]) == {"gen", "score"}
    model = EMBEDDED_MODEL_NAME
    score = {"model": model, "prompt": text[:2000], "max_tokens": 0, "temperature": 0}
    first = post("/v1/completions", score)
    post("/v1/completions", {**score, "prompt": text[:2000] + " And more."})  # the same prefix
    after = stats()[model]["score"]
    sent = after["prompt_tokens"] - before[model]["score"]["prompt_tokens"]
    computed = after["computed_tokens"] - before[model]["score"]["computed_tokens"]
    assert after["calls"] - before[model]["score"]["calls"] == 2
    assert sent >= 2 * first["usage"]["prompt_tokens"]
    assert computed <= sent - 128  # at least one 128-token chunk of the second prompt was reused
    assert after["busy_s"] > before[model]["score"]["busy_s"]


def test_default_flow_starts_the_embedded_server(tmp_path, small_corpus, prefect_harness, monkeypatch):
    """No base URL set: the flow starts its own llama.cpp server (writer and judge) and writes real
    FRet rows."""
    from flows.fret import fret_flow
    from gecko_factory.options import RunOptions

    from gecko_factory.llm.settings import EMBEDDED_JUDGE_MODEL, EMBEDDED_MODEL_NAME

    for k in ("OPENAI_BASE_URL", "GECKO_LLM_BASE_URL", "GECKO_LLM_MODEL", "GECKO_LLM_JUDGE_MODEL"):
        monkeypatch.delenv(k, raising=False)
    m = fret_flow(run_dir=str(tmp_path / "run"),
                  options=RunOptions(corpus=small_corpus, limit=3, candidates=4, shard_size=3))
    print(f"\nembedded run: {json.dumps(m['counts'])}, {m['llm_usage']}, {m['wall_seconds']}s")
    assert m["accounting_ok"] and m["judge_mode"] == ["two_prompt"]
    assert m["counts"]["examples"] + sum(m["counts"]["skipped"].values()) == 3
    assert m["counts"]["examples"] >= 2
    df = pl.read_parquet(sorted((tmp_path / "run" / "shards").glob("part-*.parquet")))
    for row in df.iter_rows(named=True):
        # the small model writes, the audited judge scores (one embedded server serves both)
        assert row["query"] and row["task"] and row["llm_model"] == EMBEDDED_MODEL_NAME
        assert row["judge_model"] == EMBEDDED_JUDGE_MODEL
        assert all(c["ql"] is not None and c["ql"] < 0 and c["rc"] <= 0 for c in row["candidates"])
