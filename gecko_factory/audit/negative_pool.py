"""The negative pool against labels, without an LLM: how often the guard leaves a query no judged
negative, how often the pool beyond the N supplies one, and how often that one is labelled relevant.

Entry point: `negative_pool_audit(dataset, corpus, cfg) -> PoolAudit`; `python -m
gecko_factory.audit.negative_pool` prints it for SciFact train (every claim, a minute on 2 cores).

Each labelled query is treated as a FRet seed whose labelled document wrote it: that document is
the seed and, as the keep-seed rule keeps it unless the judge is confident otherwise, the positive.
The N candidates are retrieved (the labelled document forced in) as a run retrieves them. Whether
the guard lets any judged candidate be the negative does not depend on the judge (it reads
similarities, cosines and texts, never QL or RC); which one the judge's order would pick does.
So this measures the pool exactly and the judged negatives only as a bound: the share of the
guard-allowed judged candidates that are labelled relevant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gecko_factory.audit.data import PreparedCorpus
from gecko_factory.audit.judging import pick_seed, split_queries
from gecko_factory.config import FretConfig
from gecko_factory.corpus_store import open_corpus
from gecko_factory.embed import Encoder
from gecko_factory.evaluate import RetrievalDataset
from gecko_factory.fusion import allowed_negatives, reserve_negative
from gecko_factory.index import load_index
from gecko_factory.judge import as_scored
from gecko_factory.mine import candidates_for, cosine_lookup, neighbours, reserve, with_seed


@dataclass
class PoolAudit:
    queries: int = 0  # labelled queries with a labelled document in the corpus
    allowed_judged: int = 0  # judged candidates the guard lets be the negative, over all queries
    allowed_judged_relevant: int = 0  # ... of which labelled relevant
    no_judged_negative: int = 0  # queries where the guard lets none of the N through
    pool_negative: int = 0  # ... where the pool supplies one
    pool_negative_relevant: int = 0  # ... that is labelled relevant (a false negative)

    def to_markdown(self, n: int, pool: int) -> str:
        def share(a: int, b: int) -> str:
            return f"{a} of {b} ({a / b:.1%})" if b else "0 of 0"

        return "\n".join([
            f"Negative pool, N = {n}, pool = {pool}, {self.queries} labelled queries (no LLM):", "",
            "| | count |", "|---|---:|",
            f"| guard-allowed judged candidates labelled relevant (bound for a judged negative) | "
            f"{share(self.allowed_judged_relevant, self.allowed_judged)} |",
            f"| queries with no judged negative | {share(self.no_judged_negative, self.queries)} |",
            f"| of those, a negative from the pool | {share(self.pool_negative, self.no_judged_negative)} |",
            f"| pool negatives labelled relevant (false negatives) | "
            f"{share(self.pool_negative_relevant, self.pool_negative)} |", ""])


def negative_pool_audit(dataset: RetrievalDataset, corpus: PreparedCorpus, cfg: FretConfig,
                        query_ids: list[str] | None = None) -> PoolAudit:
    store = open_corpus(corpus.run_dir)
    pending, _, _ = split_queries(dataset, store, query_ids or list(dataset.queries), {})
    out = PoolAudit(queries=len(pending))
    if not pending or cfg.negative_guard is None:
        return out
    index = load_index(corpus.index.path)
    vectors = Encoder.load(cfg.encoder).encode([dataset.queries[q] for q, _ in pending], cfg.embed_batch_size)
    got = neighbours(index, vectors, cfg.candidates, cfg.index.ef_search)
    judged_lists, seeds = [], []
    for vec, retrieved, (_, relevant) in zip(vectors, got, pending):
        seed, _ = pick_seed(retrieved, relevant)
        seeds.append(seed)
        judged_lists.append(candidates_for(index, vec, with_seed(retrieved, seed)))
    spares = reserve(index, vectors, judged_lists, cfg.negative_pool, cfg.index.ef_search)
    for (_, relevant), seed, judged, spare in zip(pending, seeds, judged_lists, spares):
        cosine = cosine_lookup([*judged, *spare])
        positive = as_scored(next(c for c in judged if c.id == seed), store[seed])
        allowed = allowed_negatives([as_scored(c, store[c.id]) for c in judged], positive, seed,
                                    cfg.negative_guard, cosine)
        out.allowed_judged += len(allowed)
        out.allowed_judged_relevant += sum(c.id in relevant for c in allowed)
        if allowed:
            continue
        out.no_judged_negative += 1
        negative = reserve_negative([as_scored(c, store[c.id]) for c in spare], positive, seed, cfg.negative_guard, cosine)
        if negative is not None:
            out.pool_negative += 1
            out.pool_negative_relevant += negative.id in relevant
    return out


def main() -> None:
    import argparse

    from gecko_factory.audit.data import load_labelled, prepare_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", default=None, help="a BEIR folder or zip (default: SciFact)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--pool", type=int, default=FretConfig().negative_pool)
    parser.add_argument("--out", default="runs/audit")
    args = parser.parse_args()
    cfg = FretConfig(candidates=args.candidates, negative_pool=args.pool)
    dataset = load_labelled(args.beir, args.split)
    corpus = prepare_corpus(dataset, Path(args.out), cfg)
    print(negative_pool_audit(dataset, corpus, cfg).to_markdown(args.candidates, args.pool))


if __name__ == "__main__":
    main()
