import math

import pytest

from gecko_factory.judge import (one_pass_prompt, ql_prompt, query_span, relevance_head, relevance_messages,
                                 shared_head, shared_prefix_prompts, text_key, yes_logprob)
from gecko_factory.testing.scripted_server import prompt_scores


def test_yes_logprob_sums_variants_and_floors():
    top = {" Yes": math.log(0.3), "yes": math.log(0.2), "No": math.log(0.5)}
    assert yes_logprob(top) == pytest.approx(math.log(0.5))
    assert yes_logprob({"No": -0.1, "Maybe": -4.0}) == -4.0  # P(yes) is below the smallest shown


def test_text_key_ignores_case_punctuation_and_spacing():
    assert text_key("Axle", "An axle is a rod.") == text_key("axle", "an  AXLE is a rod")
    assert text_key("Axle", "An axle is a rod.") != text_key("Axle", "An axle is a shaft.")


def test_one_pass_prompt_extends_the_ql_prompt_whose_text_is_pinned():
    # The text is in every cache key and prompt version (judge_v1@8f729ba6): it must not move.
    ql = "Passage: PASSAGE\nA search query this passage answers: QUERY\n"
    assert ql_prompt("PASSAGE", "QUERY") == ql
    assert one_pass_prompt("PASSAGE", "QUERY") == (
        ql, ql + "Does the passage answer the query? Answer: Yes")
    assert ql[slice(*query_span(ql, "QUERY"))] == "QUERY\n"


def test_the_rc_head_is_the_chat_before_the_passage_line_and_the_same_for_every_passage():
    """What a seed's N RC chats share (the embedded server computes it once): the system message
    and the user message up to the line that holds the passage."""
    message, char = relevance_head("QUERY")
    heads = set()
    for passage in ("PASSAGE", "Another passage.\nWith two lines."):
        chat = relevance_messages("QUERY", passage)
        assert message == 1 and chat[1]["content"][char:].startswith(f"Passage: {passage}")
        heads.add((chat[0]["content"], chat[1]["content"][:char]))
    assert heads == {(relevance_messages("QUERY", "x")[0]["content"], "Query: QUERY\n")}
    assert relevance_head("a longer query") != (message, char)  # the query is part of the head


def test_shared_prefix_prompts_begin_with_the_same_passage_line_and_rc_asks_without_a_claim():
    ql, rc = shared_prefix_prompts("PASSAGE", "QUERY")
    assert ql == ql_prompt("PASSAGE", "QUERY")  # the same QL as every other form
    assert rc == ("Passage: PASSAGE\nQuery: QUERY\n"
                  "Does the passage answer the query? Answer Yes or No.\nAnswer: Yes")
    shared = "Passage: PASSAGE\n"
    assert ql.startswith(shared) and rc.startswith(shared)
    assert shared_head(ql, rc) == len(shared)  # the server's prefix_break: the whole passage line
    assert "this passage answers" not in rc  # one_pass's RC reads that claim before answering


def test_the_shared_prefix_form_scores_one_request_per_candidate_as_its_parts_would(scripted_server):
    """Through real HTTP: QL is the QL prompt's query span, RC the final " Yes" of the RC prompt,
    both from one completions request holding the two prompts."""
    import asyncio

    from gecko_factory.corpus import Paragraph
    from gecko_factory.judge import judge
    from gecko_factory.llm.client import LLMClient
    from gecko_factory.llm.settings import LLMSettings
    from gecko_factory.mine import Candidate

    paragraphs = [Paragraph("a", "", "the tower in paris is made of iron"),
                  Paragraph("b", "", "plants turn sunlight into sugar")]
    cands = [(Candidate(p.id, i + 1, 0.5), p) for i, p in enumerate(paragraphs)]

    async def go(mode):
        client = LLMClient(LLMSettings(_env_file=None, model="scripted"), scripted_server.base_url)
        try:
            return await judge(client, "iron tower paris", cands, mode, 2000), client.usage.calls
        finally:
            await client.aclose()

    shared, calls = asyncio.run(go("shared_prefix"))
    two_prompt, two_calls = asyncio.run(go("two_prompt"))
    assert calls == len(cands) and two_calls == 2 * len(cands)
    assert [j.ql for j in shared] == [j.ql for j in two_prompt]  # the same QL prompt
    for j, p in zip(shared, paragraphs):
        rc = shared_prefix_prompts(p.text, "iron tower paris")[1]
        assert j.rc == prompt_scores(rc)[1][-1]  # the scripted log P(Yes) of that very prompt
    assert shared[0].rc > shared[1].rc
