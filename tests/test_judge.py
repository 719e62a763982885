import math

import pytest

from gecko_factory.judge import one_pass_prompt, ql_prompt, query_span, text_key, yes_logprob


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
