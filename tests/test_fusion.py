"""Fusion and the hard-negative guard, worked by hand."""

import math

import numpy as np
import pytest

from gecko_factory.config import FretConfig
from gecko_factory.fusion import (NO_SAFE_NEGATIVE, FusionConfig, NegativeGuard, Scored, allowed_negatives,
                                  choose_negative, negative_possible,
                                  choose_positive, decide, fuse, rank_desc, reserve_negative)

RRF = FusionConfig()


def cands(ql, rc, sims=None, keys=None):
    sims = sims or [0.8 - 0.01 * i for i in range(len(ql))]
    keys = keys or [f"k{i}" for i in range(len(ql))]
    return [Scored(f"p{i}", i + 1, s, q, r, k) for i, (q, r, s, k) in enumerate(zip(ql, rc, sims, keys))]


def test_rrf_on_a_hand_worked_example():
    # QL ranks B > A > D > C, RC ranks A > C > B > D.
    cs = cands([-5.0, -3.0, -9.0, -7.0], [-0.1, -2.0, -0.5, -3.0])
    # R = 1/rQL + 1/rRC: A = 1/2+1 = 1.5, B = 1+1/3, C = 1/4+1/2 = 0.75, D = 1/3+1/4
    assert fuse(cs, RRF) == pytest.approx([1.5, 4 / 3, 0.75, 7 / 12])


def test_rc_only_uses_the_signals_present_and_ties_keep_retrieval_order():
    assert fuse(cands([None, None], [-2.0, -1.0]), RRF) == [0.5, 1.0]
    assert rank_desc([1.0, 1.0, 2.0]) == [2, 3, 1]


def test_weights_silence_a_signal_and_count_retrieval():
    cs = cands([-5.0, -3.0, -9.0], [-0.1, -2.0, -0.5])
    assert fuse(cs, FusionConfig(weights={"ql": 1.0})) == pytest.approx([0.5, 1.0, 1 / 3])
    w = FusionConfig(weights={"retrieval": 2.0, "ql": 1.0})
    assert fuse(cs, w) == pytest.approx([2 + 0.5, 1 + 1.0, 2 / 3 + 1 / 3])


def test_keep_seed_relabels_only_when_every_weighted_signal_agrees():
    keep = FusionConfig(keep_seed=True)
    # p1 wins QL by far but loses RC to the seed p0: RRF ties them, the seed stays
    cs = cands([-20.0, -5.0, -30.0], [-0.5, -0.9, -2.0])
    assert choose_positive(cs, fuse(cs, keep), keep, "p0").id == "p0"
    # p1 is first on QL and on RC: relabelled
    cs = cands([-20.0, -5.0, -30.0], [-0.9, -0.5, -2.0])
    assert choose_positive(cs, fuse(cs, keep), keep, "p0").id == "p1"
    # first on both, but the judge does not answer Yes for it (P(Yes) 0.4): the seed stays
    cs = cands([-20.0, -5.0, -30.0], [-1.2, math.log(0.4), -2.0])
    assert choose_positive(cs, fuse(cs, keep), keep, "p0").id == "p0"
    # p1 beats the seed on both but p2 is first on RC: the signals do not agree, the seed stays
    cs = cands([-20.0, -5.0, -30.0], [-0.9, -0.5, -0.1])
    assert choose_positive(cs, fuse(cs, keep), keep, "p0").id == "p0"
    # RC alone weighed (or measured): RC's first wins; retrieval never votes
    rc_only = FusionConfig(weights={"retrieval": 1.0, "rc": 1.0}, keep_seed=True)
    assert choose_positive(cs, fuse(cs, rc_only), rc_only, "p0").id == "p2"
    never = FusionConfig(weights={"retrieval": 1.0}, keep_seed=True)
    assert choose_positive(cs, fuse(cs, never), never, "p1").id == "p1"
    # RRF: p1 = 1/1 + 1/2 beats the seed p0 = 1/4 + 1/1 though p0 wins RC: Gecko relabels
    cs = cands([-20.0, -5.0, -6.0, -7.0], [-0.5, -0.6, -0.9, -1.0])
    assert choose_positive(cs, fuse(cs, RRF), RRF, "p0").id == "p1"
    assert choose_positive(cs, fuse(cs, keep), keep, "p0").id == "p0"


def test_guard_drops_a_planted_duplicate_of_the_positive():
    guard = NegativeGuard(perc_pos=None)  # duplicates alone
    # p3 is the positive's text again (same normalised key), p2 a near-copy (cosine 0.99)
    cs = cands([-1.0, -6.0, -8.0, -9.0], [-0.1, -2.0, -3.0, -4.0], keys=["a", "b", "c", "a"])
    fused = fuse(cs, RRF)
    cos = {("p2", "p0"): 0.99}
    cosine = lambda a, b: cos.get((a, b), 0.5)  # noqa: E731
    pos = choose_positive(cs, fused, RRF, "p0")
    assert choose_negative(cs, fused, pos, "p0", None).id == "p3"  # Gecko: the duplicate
    assert choose_negative(cs, fused, pos, "p0", guard, cosine).id == "p1"


def test_guard_topk_percpos_and_the_seed():
    guard = NegativeGuard()
    # similarities 0.80, 0.78, 0.70, 0.60: 95 % of the positive's (p0) is 0.76 → p1 is too close
    cs = cands([-1.0, -6.0, -8.0, -9.0], [-0.1, -2.0, -3.0, -4.0], sims=[0.80, 0.78, 0.70, 0.60])
    fused = fuse(cs, RRF)
    assert choose_negative(cs, fused, cs[0], "p0", guard).id == "p3"
    # relabelled to p1: the seed p0 (which wrote the query) may not be the negative
    assert choose_negative(cs, fused, cs[1], "p0", NegativeGuard(perc_pos=None)).id == "p3"
    only_close = cands([-1.0, -2.0], [-0.1, -0.2], sims=[0.80, 0.79])
    pick = decide(only_close, RRF, guard, "p0")
    assert pick.positive.id == "p0" and pick.negative is None  # the shard counts NO_SAFE_NEGATIVE
    assert NO_SAFE_NEGATIVE == "no_safe_negative"


def test_reserve_negative_is_the_nearest_unjudged_neighbour_the_guard_lets_through():
    guard = NegativeGuard()
    positive = Scored("p0", 1, 0.80, -1.0, -0.1, "k0")
    # 95 % of 0.80 is 0.76: r6 is too close, r7 a near-copy of the positive, r8 the first safe one
    spare = [Scored("r6", 6, 0.78, None, None, "a"), Scored("r7", 7, 0.74, None, None, "b"),
             Scored("r8", 8, 0.73, None, None, "c"), Scored("r9", 9, 0.70, None, None, "d")]
    cosine = lambda a, b: 0.99 if a == "r7" else 0.5  # noqa: E731
    assert reserve_negative(spare, positive, "p0", guard, cosine).id == "r8"
    assert reserve_negative(spare[:2], positive, "p0", guard, cosine) is None
    assert reserve_negative(spare, positive, "p0", None) is None  # Gecko's rule never needs one


def test_allowed_negatives_keep_their_order_and_are_what_both_choosers_read():
    # similarities 0.80 (positive p0), 0.78 (within 95 %), 0.70, 0.60; p3 a near-copy of p0
    cs = cands([-1.0, -6.0, -8.0, -9.0], [-0.1, -2.0, -3.0, -4.0], sims=[0.80, 0.78, 0.70, 0.60])
    cosine = lambda a, b: 0.99 if a == "p3" else 0.5  # noqa: E731
    assert [c.id for c in allowed_negatives(cs, cs[0], "p0", None)] == ["p1", "p2", "p3"]
    assert [c.id for c in allowed_negatives(cs[::-1], cs[0], "p0", None)] == ["p3", "p2", "p1"]
    assert [c.id for c in allowed_negatives(cs, cs[0], "p0", NegativeGuard(), cosine)] == ["p2"]
    fused = fuse(cs, RRF)
    assert choose_negative(cs, fused, cs[0], "p0", NegativeGuard(), cosine).id == "p2"
    assert reserve_negative(cs, cs[0], "p0", NegativeGuard(), cosine).id == "p2"


def test_negative_possible_is_false_exactly_when_every_positive_would_leave_none():
    guard = NegativeGuard()
    close = cands([-1.0, -2.0, -3.0], [-0.1, -0.2, -0.3], sims=[0.80, 0.79, 0.78])
    far = Scored("r9", 9, 0.50, None, None, "z")
    assert not negative_possible(close, [], "p0", guard)
    assert negative_possible(close, [far], "p0", guard)  # the pool has one
    assert negative_possible(close, [], "p0", None)  # Gecko's rule: any other candidate
    # the guard is relative to the positive: with the seed p0 (0.80) as the positive, p1 (0.82)
    # and p2 (0.77) are both above 0.76; a relabel to p1 would let p2 through (0.77 < 0.779)
    mixed = cands([-1.0, -2.0, -3.0], [-0.1, -0.2, -0.3], sims=[0.80, 0.82, 0.77])
    assert not allowed_negatives(mixed, mixed[0], "p0", guard)
    assert [c.id for c in allowed_negatives(mixed, mixed[1], "p0", guard)] == ["p2"]
    assert negative_possible(mixed, [], "p0", guard)
    # and whatever the judge says, decide() agrees with it
    for ql in ([-1.0, -2.0, -3.0], [-3.0, -1.0, -2.0], [-3.0, -2.0, -1.0]):
        for rc in ([-0.1, -0.2, -0.3], [-3.0, -0.01, -2.0], [-3.0, -2.0, -0.01]):
            pick = decide(cands(ql, rc, sims=[0.80, 0.79, 0.78]), FusionConfig(keep_seed=True), guard, "p0")
            assert pick.negative is None


def test_random_negative_is_seeded_and_among_the_allowed():
    cs = cands([-1.0, -6.0, -8.0, -9.0], [-0.1, -2.0, -3.0, -4.0])
    fused = fuse(cs, RRF)
    picks = {choose_negative(cs, fused, cs[0], "p0", None, strategy="random", key=f"k{i}").id
             for i in range(40)}
    assert picks == {"p1", "p2", "p3"}
    same = [choose_negative(cs, fused, cs[0], "p0", None, strategy="random", key="s") for _ in range(2)]
    assert same[0] == same[1]


def test_decide_reads_vectors_like_a_shard_row():
    v = np.eye(3, dtype=np.float32)
    cs = cands([-1.0, -6.0, -8.0], [-0.1, -2.0, -3.0], sims=[0.9, 0.5, 0.4])
    vecs = {"p0": v[0], "p1": v[0], "p2": v[2]}  # p1 points where the positive does
    pick = decide(cs, RRF, NegativeGuard(), "p0", cosine=lambda a, b: float(vecs[a] @ vecs[b]))
    assert (pick.positive.id, pick.negative.id) == ("p0", "p2")


@pytest.mark.parametrize("spec", ["rrf", "rrf+keep_seed", "wrrf:retrieval=0.6,ql=0.5,rc=0",
                                  "wrrf:retrieval=1,ql=1,rc=0.25+keep_seed"])
def test_spec_round_trips(spec):
    assert FusionConfig.parse(spec).spec() == spec


@pytest.mark.parametrize("bad", ["rrf+keep", "wrrf:", "wrrf:qq=1", "wrrf:ql=-1", "wrrf:ql=0,rc=0", "borda"])
def test_bad_specs_are_refused(bad):
    with pytest.raises(ValueError):
        FusionConfig.parse(bad)


def test_fusion_and_guard_are_part_of_the_config_hash():
    base = FretConfig()
    assert FretConfig(fusion=FusionConfig.parse("rrf")).output_hash() != base.output_hash()
    assert FretConfig(fusion=FusionConfig.parse("wrrf:ql=1,rc=0.5")).output_hash() != base.output_hash()
    assert FretConfig(negative_guard=None).output_hash() != base.output_hash()
    assert FretConfig(negative_guard=NegativeGuard(perc_pos=0.9)).output_hash() != base.output_hash()
    assert FretConfig(fusion=base.fusion).output_hash() == base.output_hash()


def test_a_fusion_change_invalidates_the_shard_markers(tmp_path, wiki_sample):
    import json

    from gecko_factory.corpus import CorpusSpec
    from gecko_factory.plan import PlanMismatch, plan_run
    from gecko_factory.schemas import ShardStats
    from gecko_factory.shards import commit_shard, done_marker, hash_ids, shard_config_hash

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:10]))
    spec, run = CorpusSpec(path=str(corpus)), tmp_path / "run"
    plan = plan_run(FretConfig(corpus=spec, shard_size=5), run)
    inputs, done_as = hash_ids(plan.shards[0]), shard_config_hash(plan.config_hash, "two_prompt")
    commit_shard(run, 0, [], inputs, done_as, ShardStats())
    assert done_marker(run, 0, inputs, done_as) is not None
    gecko = FretConfig(corpus=spec, shard_size=5, fusion=FusionConfig.parse("rrf"))
    with pytest.raises(PlanMismatch):  # the folder's shards were chosen with another fusion
        plan_run(gecko, run)
    again = plan_run(gecko, run, force=True)
    assert again.shards[0] == plan.shards[0] and again.config_hash != plan.config_hash
    assert done_marker(run, 0, inputs, shard_config_hash(again.config_hash, "two_prompt")) is None
