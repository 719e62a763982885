import math

import pytest

from gecko_factory.judge import text_key, yes_logprob


def test_yes_logprob_sums_variants_and_floors():
    top = {" Yes": math.log(0.3), "yes": math.log(0.2), "No": math.log(0.5)}
    assert yes_logprob(top) == pytest.approx(math.log(0.5))
    assert yes_logprob({"No": -0.1, "Maybe": -4.0}) == -4.0  # P(yes) is below the smallest shown


def test_text_key_ignores_case_punctuation_and_spacing():
    assert text_key("Axle", "An axle is a rod.") == text_key("axle", "an  AXLE is a rod")
    assert text_key("Axle", "An axle is a rod.") != text_key("Axle", "An axle is a shaft.")
