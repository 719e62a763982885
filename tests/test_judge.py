import math

import pytest

from gecko_factory.judge import JudgedCandidate, fuse, rank_desc, select, yes_logprob


def test_fusion_on_a_hand_worked_example():
    # Four candidates. QL ranks them B > A > D > C, RC ranks them A > C > B > D.
    ql = [-5.0, -3.0, -9.0, -7.0]
    rc = [-0.1, -2.0, -0.5, -3.0]
    assert rank_desc(ql) == [2, 1, 4, 3]
    assert rank_desc(rc) == [1, 3, 2, 4]
    # R = 1/rQL + 1/rRC: A = 1/2+1 = 1.5, B = 1+1/3, C = 1/4+1/2 = 0.75, D = 1/3+1/4
    assert fuse(ql, rc) == pytest.approx([1.5, 4 / 3, 0.75, 7 / 12])


def test_fusion_rc_only_uses_one_ranking():
    assert fuse([None, None], [-2.0, -1.0]) == [0.5, 1.0]


def test_ties_keep_retrieval_order():
    assert rank_desc([1.0, 1.0, 2.0]) == [2, 3, 1]


def _judged(fused_ranks):
    return [JudgedCandidate(f"p{i}", i + 1, 0.0, 0.0, 1.0 / r, r) for i, r in enumerate(fused_ranks)]


def test_select_lowest_and_random():
    judged = _judged([3, 1, 4, 2])
    pos, neg = select(judged, "lowest", key="k")
    assert (pos.id, neg.id) == ("p1", "p2")
    picks = {select(judged, "random", key=f"k{i}")[1].id for i in range(40)}
    assert picks == {"p0", "p2", "p3"}  # any but the positive, and all of them over many keys
    assert select(judged, "random", key="same") == select(judged, "random", key="same")


def test_yes_logprob_sums_variants_and_floors():
    top = {" Yes": math.log(0.3), "yes": math.log(0.2), "No": math.log(0.5)}
    assert yes_logprob(top) == pytest.approx(math.log(0.5))
    assert yes_logprob({"No": -0.1, "Maybe": -4.0}) == -4.0  # P(yes) is below the smallest shown
