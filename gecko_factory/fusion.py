"""Fusion: from a query's judged candidates to its positive and its hard negative.

Pure functions of the scores (no LLM), so the audit can replay any fusion on one set of judged
candidates. Three signals per candidate: `retrieval` (the encoder's rank), `ql` and `rc` (the
judge's, see judge.py). Entry points: `fuse(signals, FusionConfig) -> list[float]`,
`choose_positive(...)`, `choose_negative(...)`.

- Ranking: weighted reciprocal-rank fusion, R = sum over signals of w_s / rank_s. Gecko's RRF is
  the special case w = {ql: 1, rc: 1}. Ranks, not raw scores: QL is a sum over the query's
  tokens and RC a log-probability, on scales that do not add up. Weights are meant to come from
  an audit (`gecko-factory audit` prints them): a signal no better than chance gets weight 0,
  where RRF would give it the same vote as the best one (issue 12: a 0.5B model's RC).
- `keep_seed`: the seed stays the positive unless the judge is confident another candidate is
  better: every judge signal the fusion weighs ranks that one first ("it wins on both signals")
  and the relevance judge answers Yes for it. No threshold is fitted: unanimity, and the yes/no
  classifier's own decision. A paragraph wrote the query, so it is the prior; a relabel needs
  more than a noisy signal's say-so. (Reranking without a seed, the audit lets retrieval's top
  play the prior.)
- Hard negative: the lowest fused candidate that is not a likely false negative (`NegativeGuard`:
  NV-Retriever's TopK-PercPos, near-duplicates of the positive, and the seed itself). With a
  small N in a dense corpus, every judged candidate can sit within 5 % of the positive's
  similarity (a quarter of SciFact's seeds at N = 5): then `reserve_negative` takes the nearest
  retrieved neighbour beyond them that the guard lets through, as NV-Retriever mines from a
  wider top-k, instead of losing the seed and the judge's work on it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from gecko_factory.hashing import stable_int

SIGNALS = ("retrieval", "ql", "rc")
Signal = Literal["retrieval", "ql", "rc"]
GECKO_RRF = {"retrieval": 0.0, "ql": 1.0, "rc": 1.0}
_WEIGHT = re.compile(r"^(retrieval|ql|rc)=([0-9]*\.?[0-9]+)$")


class FusionConfig(BaseModel):
    """How the positive is chosen. `spec()` is its short name, recorded in every row."""

    weights: dict[str, float] = Field(default_factory=lambda: dict(GECKO_RRF),
                                      description="w_s of R = sum w_s / rank_s (RRF: ql=rc=1)")
    keep_seed: bool = Field(default=False, description="relabel only to a candidate every weighted "
                                                        "judge signal ranks first and RC calls relevant")

    @field_validator("weights")
    @classmethod
    def _weights(cls, w: dict[str, float]) -> dict[str, float]:
        unknown = set(w) - set(SIGNALS)
        if unknown or any(v < 0 for v in w.values()) or not any(v > 0 for v in w.values()):
            raise ValueError(f"weights {w}: signals from {SIGNALS}, >= 0, at least one > 0")
        return {s: float(w.get(s, 0.0)) for s in SIGNALS}

    def spec(self) -> str:
        base = "rrf" if self.weights == GECKO_RRF else "wrrf:" + ",".join(
            f"{s}={self.weights[s]:g}" for s in SIGNALS)
        return base + ("+keep_seed" if self.keep_seed else "")

    @classmethod
    def parse(cls, spec: str) -> "FusionConfig":
        """`rrf`, `wrrf:retrieval=1,ql=1,rc=0`, either with `+keep_seed`."""
        base, plus, rest = spec.strip().partition("+")
        if plus and rest != "keep_seed":
            raise ValueError(f"fusion {spec!r}: only '+keep_seed' may follow the ranking")
        if base == "rrf":
            return cls(weights=dict(GECKO_RRF), keep_seed=bool(plus))
        name, _, args = base.partition(":")
        parts = [p.strip() for p in args.split(",") if p.strip()]
        matches = [_WEIGHT.match(p) for p in parts]
        if name != "wrrf" or not parts or not all(matches):
            raise ValueError(f"fusion {spec!r}: expected rrf or wrrf:retrieval=W,ql=W,rc=W "
                             "(optionally +keep_seed)")
        return cls(weights={m.group(1): float(m.group(2)) for m in matches}, keep_seed=bool(plus))


class NegativeGuard(BaseModel):
    """Which candidates may not be the hard negative (likely false negatives)."""

    perc_pos: float | None = Field(default=0.95, gt=0, le=1, description=(
        "TopK-PercPos: drop candidates whose query similarity exceeds this share of the "
        "positive's (None: off)"))
    dup_cosine: float | None = Field(default=0.98, gt=0, le=1, description=(
        "drop near-duplicates of the positive: passage cosine at or above this (None: off)"))


@dataclass(frozen=True)
class Scored:
    """What fusion reads of one candidate (in retrieval order)."""

    id: str
    retrieval_rank: int
    similarity: float | None  # cosine(query, passage); None: unknown (guard skips that test)
    ql: float | None
    rc: float | None
    text_key: str = ""  # normalised-text hash ("" = unknown)


def rank_desc(scores: list[float]) -> list[int]:
    """1-based ranks, highest score first; ties keep retrieval order (stable sort)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0] * len(scores)
    for r, i in enumerate(order, start=1):
        ranks[i] = r
    return ranks


def signal_values(c: Scored, signal: str) -> float | None:
    """Higher is better for every signal (retrieval: the negated rank)."""
    return -float(c.retrieval_rank) if signal == "retrieval" else getattr(c, signal)


def fuse(cands: list[Scored], fusion: FusionConfig) -> list[float]:
    """R per candidate, over the weighted signals present for every candidate."""
    fused = [0.0] * len(cands)
    for signal, w in fusion.weights.items():
        values = [signal_values(c, signal) for c in cands]
        if w == 0 or any(v is None for v in values):
            continue  # rc_only judging has no QL: the other signals decide
        for i, r in enumerate(rank_desc(values)):  # type: ignore[arg-type]
            fused[i] += w / r
    return fused


JUDGE_SIGNALS = ("ql", "rc")
YES = math.log(0.5)  # RC above this: the judge answers Yes rather than No


def voters(fusion: FusionConfig) -> list[str]:
    """The judge signals that vote on a relabel: those the fusion weighs. Retrieval does not:
    it put the seed (or, reranking, its own top) where it is, so it would always vote to keep."""
    return [s for s in JUDGE_SIGNALS if fusion.weights[s] > 0]


def confident_winner(cands: list[Scored], fusion: FusionConfig) -> Scored | None:
    """The candidate every voting signal ranks first, if they agree on one and the relevance
    judge answers Yes for it (P(Yes) > 1/2: the classifier's own decision, not a fitted
    threshold); else None. Agreement alone is not confidence: a 0.5B judge's RC moves a few
    hundredths of a nat between candidates and puts P(Yes) near 1/3 for every SciFact abstract,
    so two signals agreeing on a candidate it does not even call relevant is chance."""
    firsts = set()
    for signal in voters(fusion):
        values = [signal_values(c, signal) for c in cands]
        if any(v is None for v in values):
            continue  # rc_only: QL was not measured and has no say
        firsts.add(rank_desc(values).index(1))  # type: ignore[arg-type]
    if len(firsts) != 1:
        return None
    winner = cands[firsts.pop()]
    if "rc" in voters(fusion) and winner.rc is not None and winner.rc <= YES:
        return None
    return winner


def choose_positive(cands: list[Scored], fused: list[float], fusion: FusionConfig,
                    seed_id: str | None) -> Scored:
    """The fusion's top; with `keep_seed`, the seed unless the judge is confident another
    candidate is better (`confident_winner`: first on both signals, and a Yes): then that one."""
    if not fusion.keep_seed or seed_id is None or all(c.id != seed_id for c in cands):
        return cands[rank_desc(fused).index(1)]
    winner = confident_winner(cands, fusion)
    if winner is not None:
        return winner
    return next(c for c in cands if c.id == seed_id)


def guard_reason(c: Scored, positive: Scored, seed_id: str | None, guard: NegativeGuard,
                 cosine_to_positive: float | None) -> str | None:
    """Why `c` may not be the hard negative, or None when it may."""
    if c.id == positive.id:
        return "positive"
    if c.id == seed_id:
        return "seed"  # relabelled away from, but it wrote the query: a likely positive
    if c.text_key and c.text_key == positive.text_key:
        return "same_text"
    if guard.dup_cosine is not None and cosine_to_positive is not None \
            and cosine_to_positive >= guard.dup_cosine:
        return "near_duplicate"
    if guard.perc_pos is not None and c.similarity is not None and positive.similarity is not None \
            and c.similarity > guard.perc_pos * positive.similarity:
        return "above_perc_pos"
    return None


def allowed_negatives(cands: list[Scored], positive: Scored, seed_id: str | None,
                      guard: NegativeGuard | None,
                      cosine: Callable[[str, str], float | None] | None = None) -> list[Scored]:
    """The candidates that may be the hard negative, in their given order: every one but the
    positive without a guard (Gecko's rule); with one, those `guard_reason` lets through."""
    return [c for c in cands if c.id != positive.id and (guard is None or guard_reason(
        c, positive, seed_id, guard, cosine(c.id, positive.id) if cosine else None) is None)]


NO_SAFE_NEGATIVE = "no_safe_negative"  # the skip reason when the guard leaves no candidate


def choose_negative(cands: list[Scored], fused: list[float], positive: Scored,
                    seed_id: str | None, guard: NegativeGuard | None,
                    cosine: Callable[[str, str], float | None] | None = None,
                    strategy: Literal["lowest", "random"] = "lowest", key: str = "") -> Scored | None:
    """The lowest fused candidate the guard lets through, or a seeded pick among those (None:
    none is safe). Without a guard, Gecko's rule: any candidate but the positive."""
    ranks = rank_desc(fused)
    lowest_first = [c for _, c in sorted(enumerate(cands), key=lambda ic: -ranks[ic[0]])]
    allowed = allowed_negatives(lowest_first, positive, seed_id, guard, cosine)
    if not allowed:
        return None
    if strategy == "lowest":
        return allowed[0]
    return allowed[stable_int(key) % len(allowed)]


def reserve_negative(reserve: list[Scored], positive: Scored, seed_id: str | None,
                     guard: NegativeGuard | None,
                     cosine: Callable[[str, str], float | None] | None = None) -> Scored | None:
    """When the guard lets no judged candidate be the hard negative: the nearest retrieved
    neighbour beyond them that it lets through (NV-Retriever's positive-aware mining, the
    retriever as teacher: hard, yet below `perc_pos` of the positive's similarity). None without
    a guard (Gecko's rule always finds a judged one) or when none passes either."""
    if guard is None:
        return None
    return next(iter(allowed_negatives(reserve, positive, seed_id, guard, cosine)), None)


def negative_possible(cands: list[Scored], reserve: list[Scored], seed_id: str | None,
                      guard: NegativeGuard | None,
                      cosine: Callable[[str, str], float | None] | None = None) -> bool:
    """Whether some candidate, as the positive, leaves a hard negative (judged or from the pool).
    The positive is always one of `cands`, and the guard reads similarities and texts, never the
    judge's scores: when this is False the seed ends as NO_SAFE_NEGATIVE whatever the judge says,
    so judging it would be LLM work for nothing."""
    return any(allowed_negatives(cands, p, seed_id, guard, cosine)
               or reserve_negative(reserve, p, seed_id, guard, cosine) is not None for p in cands)


@dataclass(frozen=True)
class Decision:
    fused: list[float]  # R per candidate, in candidate order
    fused_ranks: list[int]  # 1 = the fusion's top (not always the positive: keep_seed)
    positive: Scored
    negative: Scored | None  # None: no safe negative (count the seed as NO_SAFE_NEGATIVE)


def decide(cands: list[Scored], fusion: FusionConfig, guard: NegativeGuard | None,
           seed_id: str | None, strategy: Literal["lowest", "random"] = "lowest", key: str = "",
           cosine: Callable[[str, str], float | None] | None = None) -> Decision:
    """Positive and hard negative of one query, as a FRet row records them."""
    fused = fuse(cands, fusion)
    positive = choose_positive(cands, fused, fusion, seed_id)
    negative = choose_negative(cands, fused, positive, seed_id, guard, cosine, strategy, key)
    return Decision(fused, rank_desc(fused), positive, negative)
