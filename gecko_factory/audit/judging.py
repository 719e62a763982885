"""The LLM part of the audit: mine and judge each labelled query as a FRet shard would.

Entry point: `judge_queries(JudgeJob) -> JudgeSummary`. Per query: the query text is embedded
and its top-N neighbours are read from the corpus index (`mine.neighbours`); the labelled
document that retrieval ranks highest plays the seed (forced in as FRet forces its seed in when
the index misses it, `mine.with_seed`); then `judge.judge` scores every candidate with the same
prompts, client and request cache as a shard. One `JudgedQuery` per query is appended to a
JSONL file named after everything that shapes the scores (`judge_identity`): a rerun skips the
queries already there, and the cost recorded is what the first run paid (a rerun's answers come
from the request cache and would count as free). Queries go one at a time, so each record's
seconds are its own: the client keeps the server busy with the query's 2N calls.

Only the query text reaches the LLM. Which documents are labelled is used to pick the seed (the
role the paragraph a query was written from plays in FRet) and nothing else here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gecko_factory.audit.data import PreparedCorpus
from gecko_factory.config import FretConfig
from gecko_factory.corpus_store import open_corpus
from gecko_factory.embed import Encoder
from gecko_factory.evaluate import RetrievalDataset
from gecko_factory.index import load_index
from gecko_factory.judge import judge
from gecko_factory.llm.cache import RequestCache
from gecko_factory.llm.client import LLMClient, LLMError
from gecko_factory.llm.settings import LLMSettings
from gecko_factory.mine import candidates_for, neighbours, with_seed
from gecko_factory.files import atomic_write_json
from gecko_factory.hashing import sha256_hex
from gecko_factory.templates import judge_prompt_version

log = logging.getLogger(__name__)

RECORD_VERSION = "audit-judged-v1"


@dataclass(frozen=True)
class AuditCandidate:
    id: str
    retrieval_rank: int  # 1 = nearest; the seed forced in takes rank N
    similarity: float  # cosine(query, passage)
    ql: float | None  # None when the server gives no prompt log-probs (rc_only)
    rc: float
    text_key: str  # judge.text_key: equal keys = the same text (near-duplicate test)


@dataclass(frozen=True)
class JudgedQuery:
    query_id: str
    query: str
    seed_id: str
    seed_retrieved: bool  # a labelled document was among the N retrieved (the reranker view)
    candidates: list[AuditCandidate]
    cosines: list[list[float]]  # passage-passage cosine, candidates in order
    usage: dict[str, int]
    seconds: float

    @classmethod
    def from_json(cls, raw: dict) -> "JudgedQuery":
        raw = dict(raw)
        raw["candidates"] = [AuditCandidate(**c) for c in raw["candidates"]]
        return cls(**raw)


@dataclass(frozen=True)
class JudgeJob:
    dataset: RetrievalDataset
    corpus: PreparedCorpus
    config: FretConfig  # candidates, judge mode, passage cut, encoder, index, model, prompts
    settings: LLMSettings
    base_url: str
    out: Path
    query_ids: list[str]  # in the order they are judged
    cache_path: Path | None  # None: no request cache


@dataclass
class JudgeSummary:
    records_path: Path
    identity: dict
    judged_now: int = 0
    reused: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # query ids by reason
    failed: dict[str, str] = field(default_factory=dict)  # query id -> error (retried next run)


def judge_identity(cfg: FretConfig, judge_mode: str, dataset: RetrievalDataset,
                   corpus_hash: str) -> dict:
    """Everything that shapes a record; a change starts a new records file. `llm_model` is the
    model that judged (the recipe's judge_model, else its one model)."""
    return {"version": RECORD_VERSION, "dataset": dataset.name, "corpus_hash": corpus_hash,
            "candidates": cfg.candidates, "judge_mode": judge_mode,
            "judge_passage_chars": cfg.judge_passage_chars, "encoder": cfg.encoder,
            "index": cfg.index.model_dump(), "llm_model": cfg.judge_model or cfg.llm_model,
            "judge_prompt": judge_prompt_version(cfg.prompt_versions, judge_mode)}


def identity_key(identity: dict) -> str:
    return sha256_hex(json.dumps(identity, sort_keys=True), length=12)


def records_path(out: Path, identity: dict) -> Path:
    return out / "judged" / f"{identity_key(identity)}.jsonl"


def read_records(path: Path) -> dict[str, JudgedQuery]:
    """The records by query id. A last line cut by a crash is ignored (that query is redone)."""
    found: dict[str, JudgedQuery] = {}
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = JudgedQuery.from_json(json.loads(line))
        except (ValueError, TypeError, KeyError):
            log.warning("%s: an unreadable line (a crash mid-write?) is ignored", path)
            continue
        found[rec.query_id] = rec
    return found


def pick_seed(retrieved: list[str], relevant: set[str]) -> tuple[str, bool]:
    """The labelled document retrieval ranks highest; else the first labelled id (forced in)."""
    for pid in retrieved:
        if pid in relevant:
            return pid, True
    return sorted(relevant)[0], False


NOT_IN_CORPUS = "labelled_doc_not_in_corpus"  # e.g. the abstract was too long for the reader


def split_queries(dataset: RetrievalDataset, store, query_ids: list[str],
                  done: dict[str, JudgedQuery]) -> tuple[list[tuple[str, set[str]]], dict[str, str], int]:
    """(pending queries with their labelled documents in the corpus, skipped ones by reason,
    how many are judged already)."""
    pending, skipped, reused = [], {}, 0
    for qid in query_ids:
        relevant = {d for d in dataset.qrels.get(qid, ()) if d in store}
        if not relevant:
            skipped[qid] = NOT_IN_CORPUS
        elif qid in done:
            reused += 1
        else:
            pending.append((qid, relevant))
    return pending, skipped, reused


async def probe_mode(client: LLMClient, mode: str) -> str:
    """RC alone when the server gives no prompt log-probs, as the FRet flow's probe decides."""
    return mode if await client.supports_prompt_logprobs() else "rc_only"


def judge_queries(job: JudgeJob) -> JudgeSummary:
    return asyncio.run(_judge_queries(job))


async def _judge_queries(job: JudgeJob) -> JudgeSummary:
    cfg = job.config
    cache = RequestCache(job.cache_path) if job.cache_path else None
    client = LLMClient(job.settings, job.base_url, cache=cache)
    try:
        await client.check_reachable()
        mode = await probe_mode(client, cfg.judge_mode)
        identity = judge_identity(cfg, mode, job.dataset, job.corpus.plan.corpus_hash)
        path = records_path(job.out, identity)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path.with_suffix(".json"), identity)  # what the file's name stands for
        summary = JudgeSummary(path, identity)
        store = open_corpus(job.corpus.run_dir)
        pending, summary.skipped, summary.reused = split_queries(
            job.dataset, store, job.query_ids, read_records(path))
        if not pending:
            return summary
        index = load_index(job.corpus.index.path)
        encoder = Encoder.load(cfg.encoder)
        vectors = await asyncio.to_thread(
            encoder.encode, [job.dataset.queries[q] for q, _ in pending], cfg.embed_batch_size)
        got = neighbours(index, vectors, cfg.candidates, cfg.index.ef_search)
        with path.open("a", encoding="utf-8") as fh:
            for (qid, relevant), vec, retrieved in zip(pending, vectors, got):
                seed, seed_retrieved = pick_seed(retrieved, relevant)
                cands = candidates_for(index, vec, with_seed(retrieved, seed))
                paragraphs = [store[c.id] for c in cands]
                scoped = client.scoped()
                t0 = time.perf_counter()
                try:
                    judged = await judge(scoped, job.dataset.queries[qid], list(zip(cands, paragraphs)),
                                         mode, cfg.judge_passage_chars)  # type: ignore[arg-type]
                except LLMError as exc:  # the service failed, not the data: retried next run
                    summary.failed[qid] = str(exc)
                    log.warning("audit: %s: judge failed: %s", qid, exc)
                    continue
                rec = JudgedQuery(
                    qid, job.dataset.queries[qid], seed, seed_retrieved,
                    [AuditCandidate(j.id, j.retrieval_rank, round(float(j.similarity), 6), j.ql, j.rc,
                                    j.text_key) for j in judged],
                    [[round(float(a.vector @ b.vector), 4) for b in cands] for a in cands],
                    scoped.usage.as_dict(), round(time.perf_counter() - t0, 3))
                fh.write(json.dumps(asdict(rec)) + "\n")
                fh.flush()  # one query's worth of LLM time is what a crash may lose
                summary.judged_now += 1
                log.info("audit: %s judged (%d of %d pending) in %.1f s", qid, summary.judged_now,
                         len(pending), rec.seconds)
        return summary
    finally:
        await client.aclose()
        if cache is not None:
            cache.close()
