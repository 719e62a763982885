"""The audit's numbers, from judged records and the labels: no LLM here.

Entry point: `build_report(records, dataset, fusions, ...) -> AuditReport`; `.to_markdown()`.
- Reranker view, over the queries whose labelled document is among the N retrieved (coverage):
  precision@1 and MRR of retrieval order, QL alone, RC alone and each fusion. A `keep_seed`
  fusion has no seed here, so retrieval's top plays the prior it keeps: the same rule, "keep
  what you started from unless every signal says otherwise".
- FRet view, over every judged query, the labelled document forced in as the seed: how often
  the positive is not labelled (wrong relabels), how often the hard negative is (false
  negatives), with Gecko's lowest-fused negative and with the guard (fusion.NegativeGuard).
- Reliability: each signal's precision@1 above chance, which is the weight the `wrrf` fusion
  gives it. Judged on the same queries it would flatter itself, so the report scores `wrrf`
  with leave-one-out weights (each query ranked with weights measured on the others).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import BaseModel

from gecko_factory.audit.judging import JudgedQuery
from gecko_factory.evaluate import RetrievalDataset
from gecko_factory.fusion import (SIGNALS, FusionConfig, NegativeGuard, Scored, choose_negative,
                                  choose_positive, fuse, rank_desc, signal_values)

AUDITED_WEIGHTS = "wrrf (audited weights)"  # the leave-one-out row's name


class RankScore(BaseModel):
    name: str
    p_at_1: float
    mrr: float
    hits: int  # queries whose top is labelled
    n: int


class FretScore(BaseModel):
    fusion: str
    guard: bool
    n: int
    relabel_rate: float  # positive != seed
    wrong_relabel_rate: float  # positive not labelled, over all queries
    # the same over the queries whose labelled document was retrieved: a FRet seed nearly
    # always is (the query was written from it), a labelled abstract often is not
    wrong_relabel_rate_retrieved: float
    false_negative_rate: float  # negative labelled, over the queries that got a negative
    no_negative_rate: float  # no safe negative (the seed is skipped), over all queries
    no_negative_rate_retrieved: float  # the same where the labelled document was retrieved


class Cost(BaseModel):
    queries_live: int  # judged by the LLM (not replayed from the request cache)
    calls_per_query: float
    prompt_tokens_per_query: float
    completion_tokens_per_query: float
    seconds_per_query: float


class AuditReport(BaseModel):
    identity: dict
    dataset: str
    split: str
    queries: int  # selected
    judged: int
    skipped: dict[str, int]
    pending: int  # selected, neither judged nor skipped (failed or not reached yet)
    covered: int  # labelled document among the N retrieved
    chance_p_at_1: float
    reranker: list[RankScore]
    fret: list[FretScore]
    weights: dict[str, float]  # audited reliability per signal
    suggested_fusion: str
    default_fusion: str
    cost: Cost | None

    def rank(self, name: str) -> RankScore:
        return next(r for r in self.reranker if r.name == name)

    def to_markdown(self) -> str:
        i = self.identity
        lines = [
            f"**Judge audit** on {self.dataset} ({self.split}): {self.judged} of {self.queries} "
            f"queries judged ({self.pending} pending, skipped {self.skipped or 'none'}); "
            f"LLM `{i.get('llm_model')}`, judge `{i.get('judge_mode')}`, N = {i.get('candidates')}, "
            f"prompt `{i.get('judge_prompt')}`.", "",
            f"As a reranker, over the {self.covered} queries whose labelled document was "
            f"retrieved (coverage {self.covered / max(1, self.judged):.0%}; chance precision@1 "
            f"{self.chance_p_at_1:.3f}):", "",
            "| order | precision@1 | MRR |", "|---|---:|---:|"]
        lines += [f"| {r.name}{' (default)' if r.name == self.default_fusion else ''} | "
                  f"{r.p_at_1:.3f} ({r.hits}/{r.n}) | {r.mrr:.3f} |" for r in self.reranker]
        lines += ["", f"As FRet uses it, over the {self.judged} judged queries (the labelled "
                  "document is the seed):", "",
                  "| fusion | negative | relabelled | wrong relabels (all / seed retrieved) | "
                  "false negatives | no safe negative (all / seed retrieved) |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {f.fusion}{' (default)' if f.fusion == self.default_fusion else ''} | "
                  f"{'guarded' if f.guard else 'lowest (Gecko)'} | {f.relabel_rate:.1%} | "
                  f"{f.wrong_relabel_rate:.1%} / {f.wrong_relabel_rate_retrieved:.1%} | "
                  f"{f.false_negative_rate:.1%} | "
                  f"{f.no_negative_rate:.1%} / {f.no_negative_rate_retrieved:.1%} |" for f in self.fret]
        w = ", ".join(f"{s} {v:.2f}" for s, v in self.weights.items())
        lines += ["", f"Audited weights (precision@1 above chance): {w} → "
                  f"`--fusion {self.suggested_fusion}`."]
        if self.cost:
            c = self.cost
            lines.append(f"Cost per query ({c.queries_live} judged live): {c.calls_per_query:.1f} "
                         f"LLM calls, {c.prompt_tokens_per_query:,.0f} prompt + "
                         f"{c.completion_tokens_per_query:,.1f} completion tokens, "
                         f"{c.seconds_per_query:.1f} s.")
        return "\n".join(lines) + "\n"


def scored(rec: JudgedQuery) -> list[Scored]:
    return [Scored(c.id, c.retrieval_rank, c.similarity, c.ql, c.rc, c.text_key)
            for c in rec.candidates]


def cosine_of(rec: JudgedQuery) -> Callable[[str, str], float | None]:
    at = {c.id: i for i, c in enumerate(rec.candidates)}
    return lambda a, b: rec.cosines[at[a]][at[b]]


def ordering(cands: list[Scored], fusion: FusionConfig, prior: str | None) -> list[str]:
    """Candidate ids best first: the fusion's positive (given the prior), then by fused rank."""
    fused = fuse(cands, fusion)
    top = choose_positive(cands, fused, fusion, prior)
    ranks = rank_desc(fused)
    rest = [c.id for _, c in sorted(zip(ranks, cands), key=lambda rc: rc[0]) if c.id != top.id]
    return [top.id] + rest


def rank_score(name: str, orders: list[list[str]], labels: list[set[str]]) -> RankScore:
    hits = sum(o[0] in rel for o, rel in zip(orders, labels))
    rr = [next((1 / r for r, pid in enumerate(o, 1) if pid in rel), 0.0) for o, rel in zip(orders, labels)]
    n = len(orders)
    return RankScore(name=name, p_at_1=hits / n if n else 0.0, mrr=sum(rr) / n if n else 0.0,
                     hits=hits, n=n)


def single(signal: str) -> FusionConfig:
    return FusionConfig(weights={signal: 1.0})


def reliability(hits: dict[str, float], n: int, chance: float) -> dict[str, float]:
    """Weight per signal: precision@1 above chance, as a share of the room above chance."""
    return {s: round(max(0.0, (hits[s] / n - chance) / (1 - chance)), 2) if n else 0.0
            for s in SIGNALS}


def audited_fusion(weights: dict[str, float], keep_seed: bool = False) -> FusionConfig:
    if not any(v > 0 for v in weights.values()):
        weights = {"retrieval": 1.0}  # nothing beat chance: keep what retrieval found
    return FusionConfig(weights=weights, keep_seed=keep_seed)


def build_report(records: Sequence[JudgedQuery], dataset: RetrievalDataset, split: str,
                 identity: dict, fusions: Sequence[FusionConfig], default: FusionConfig,
                 queries: int, skipped: dict[str, int], guard: NegativeGuard) -> AuditReport:
    """`fusions` are scored as given; the audited-weights fusion is added (leave-one-out)."""
    labels = [dataset.qrels[r.query_id] for r in records]
    covered = [(r, rel) for r, rel in zip(records, labels) if r.seed_retrieved]
    cands = [scored(r) for r, _ in covered]
    rels = [rel for _, rel in covered]
    chance = (sum(len(rel & {c.id for c in cs}) / len(cs) for cs, rel in zip(cands, rels))
              / len(cands)) if cands else 0.0
    prior = [cs[0].id for cs in cands]  # retrieval's top plays the seed a keep_seed rule keeps

    singles = {s: [ordering(cs, single(s), None) for cs in cands] for s in SIGNALS}
    present = [s for s in SIGNALS  # rc_only judging measured no QL
               if all(signal_values(c, s) is not None for cs in cands for c in cs)]
    hit_vec = {s: [o[0] in rel for o, rel in zip(singles[s], rels)] for s in SIGNALS}
    n = len(cands)
    weights = reliability({s: sum(hit_vec[s]) if s in present else 0 for s in SIGNALS}, n, chance)
    reranker = [rank_score({"retrieval": "retrieval order", "ql": "QL alone", "rc": "RC alone"}[s],
                           singles[s], rels) for s in SIGNALS if s in present]
    named = list(dict.fromkeys([f.spec() for f in [*fusions, default]]))
    for spec in named:
        f = FusionConfig.parse(spec)
        reranker.append(rank_score(spec, [ordering(cs, f, p) for cs, p in zip(cands, prior)], rels))
    loo = []  # each query ranked with weights measured on the others
    for k, cs in enumerate(cands):
        others = {s: sum(hit_vec[s]) - hit_vec[s][k] if s in present else 0 for s in SIGNALS}
        others_chance = (chance * n - len(rels[k] & {c.id for c in cs}) / len(cs)) / max(1, n - 1)
        loo.append(ordering(cs, audited_fusion(reliability(others, n - 1, others_chance)), None))
    reranker.append(rank_score(AUDITED_WEIGHTS, loo, rels))

    fret = []
    for spec in named:
        f = FusionConfig.parse(spec)
        for g in (None, guard):
            fret.append(fret_score(records, labels, f, g))
    live = [r for r in records if r.usage.get("calls", 0) > 0]
    cost = None
    if live:
        k = len(live)
        cost = Cost(queries_live=k,
                    calls_per_query=sum(r.usage["calls"] for r in live) / k,
                    prompt_tokens_per_query=sum(r.usage["prompt_tokens"] for r in live) / k,
                    completion_tokens_per_query=sum(r.usage["completion_tokens"] for r in live) / k,
                    seconds_per_query=sum(r.seconds for r in live) / k)
    return AuditReport(
        identity=identity, dataset=dataset.name, split=split, queries=queries,
        judged=len(records), skipped=skipped,
        pending=queries - len(records) - sum(skipped.values()), covered=n,
        chance_p_at_1=round(chance, 4), reranker=reranker, fret=fret, weights=weights,
        suggested_fusion=audited_fusion(weights).spec(), default_fusion=default.spec(), cost=cost)


def fret_score(records: Sequence[JudgedQuery], labels: list[set[str]], fusion: FusionConfig,
               guard: NegativeGuard | None) -> FretScore:
    relabelled = wrong = wrong_retrieved = false_neg = no_neg = no_neg_retrieved = 0
    for rec, rel in zip(records, labels):
        cs = scored(rec)
        fused = fuse(cs, fusion)
        pos = choose_positive(cs, fused, fusion, rec.seed_id)
        neg = choose_negative(cs, fused, pos, rec.seed_id, guard, cosine_of(rec))
        relabelled += pos.id != rec.seed_id
        wrong += pos.id not in rel
        wrong_retrieved += rec.seed_retrieved and pos.id not in rel
        if neg is None:
            no_neg += 1
            no_neg_retrieved += rec.seed_retrieved
        else:
            false_neg += neg.id in rel
    n = len(records)
    n_retrieved = sum(r.seed_retrieved for r in records)
    with_neg = n - no_neg
    return FretScore(fusion=fusion.spec(), guard=guard is not None, n=n,
                     relabel_rate=relabelled / n if n else 0.0,
                     wrong_relabel_rate=wrong / n if n else 0.0,
                     wrong_relabel_rate_retrieved=wrong_retrieved / n_retrieved if n_retrieved else 0.0,
                     false_negative_rate=false_neg / with_neg if with_neg else 0.0,
                     no_negative_rate=no_neg / n if n else 0.0,
                     no_negative_rate_retrieved=no_neg_retrieved / n_retrieved if n_retrieved else 0.0)
