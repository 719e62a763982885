from collections import Counter

import pytest

from gecko_factory.config import TASK_TYPES
from gecko_factory.synthesize import build_messages, is_copy, parse_answer, pick_task_type

PASSAGE = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
           "France. It is named after the engineer Gustave Eiffel, whose company built it.")


def test_parse_valid_answer_with_chatter_around_it():
    out = parse_answer('Sure!\n```json\n{"task": "Given a question, retrieve answers", '
                       '"query": "who built the eiffel tower"}\n```', PASSAGE)
    assert out.query == "who built the eiffel tower"


@pytest.mark.parametrize("answer, why", [
    ("no json here", "no JSON object"),
    ('{"task": "Given a question, retrieve answers", "query": ', "no JSON object"),
    ('{"task": "Given a question, retrieve answers", "query": 3,}', "invalid JSON"),
    ('{"task": "short", "query": "who built it"}', "invalid task/query"),
    ('{"task": "Given a question, retrieve answers"}', "invalid task/query"),
    ('{"task": "Given a question, retrieve answers", "query": "It is named after the engineer '
     'Gustave Eiffel, whose company built it."}', "copies the passage"),
])
def test_parse_rejects_with_a_reason(answer, why):
    with pytest.raises(ValueError, match=why):
        parse_answer(answer, PASSAGE)


def test_is_copy_allows_short_overlap():
    assert not is_copy("eiffel tower paris", PASSAGE)
    assert is_copy(PASSAGE, PASSAGE)


def test_task_types_are_uniform_and_stable():
    counts = Counter(pick_task_type(f"p{i}", 0, TASK_TYPES) for i in range(7000))
    assert set(counts) == set(TASK_TYPES)
    assert max(counts.values()) / min(counts.values()) < 1.15
    assert pick_task_type("p1", 0, TASK_TYPES) == pick_task_type("p1", 0, TASK_TYPES)


def test_prompt_puts_the_shared_block_first():
    a, b = build_messages("fact checking", "one"), build_messages("search result", "two")
    assert a[0] == b[0] and "Example 1" in a[0]["content"]
    assert "Task type: fact checking\nPassage: one" == a[1]["content"]


@pytest.mark.parametrize("attempts", [1, 4])
def test_a_paragraph_gets_the_recipes_attempts_then_is_skipped(scripted_server, attempts):
    """Over real HTTP: the scripted writer botches a paragraph marked [[invalid]] every time, so
    it is asked exactly `synth_attempts` times (each a new sample) and then counted as a skip."""
    import asyncio

    from gecko_factory.config import FretConfig
    from gecko_factory.corpus import Paragraph
    from gecko_factory.llm.client import LLMClient
    from gecko_factory.llm.settings import LLMSettings
    from gecko_factory.synthesize import SynthesisResult, synthesize_one

    async def go() -> tuple[SynthesisResult, int]:
        client = LLMClient(LLMSettings(model="scripted"), scripted_server.base_url)
        result = SynthesisResult()
        try:
            done = await synthesize_one(client, Paragraph("x", "", PASSAGE + " [[invalid]]"),
                                        FretConfig(synth_attempts=attempts), result)
            assert done is None
            return result, client.usage.calls
        finally:
            await client.aclose()

    result, calls = asyncio.run(go())
    assert calls == attempts and dict(result.skipped) == {"invalid_llm_output": 1}
