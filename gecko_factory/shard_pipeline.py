"""One FRet shard: per paragraph synthesize → embed the query → mine → judge; then commit.

Entry point: `run_shard(ShardJob, LLMSettings) -> ShardReport`. The shard is the unit of work and
of resume: inside it, per-paragraph LLM calls fan out with asyncio under the client's
concurrency limit. Every seed ends as a row or as a counted skip; the shard refuses to commit if
`seeds == rows + skipped` does not hold. A skip is about the data (invalid output twice, a
request the server refused for its content); a failure of the service (unreachable, timeouts,
429/5xx beyond the client's retries) fails the whole shard before anything is committed, so the
shard stays failed/pending and `resume` (or the Prefect task's retry) redoes it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gecko_factory.corpus import Paragraph
from gecko_factory.corpus_store import open_corpus
from gecko_factory.embed import Encoder
from gecko_factory.index import load_index
from gecko_factory.fusion import NO_SAFE_NEGATIVE, Decision, decide, negative_possible, reserve_negative
from gecko_factory.hashing import sha256_hex
from gecko_factory.judge import JudgedCandidate, JudgeMode, as_scored, judge
from gecko_factory.llm.budget import BudgetExhausted
from gecko_factory.llm.client import LLMRequestRejected
from gecko_factory.llm.runtime import LLMRuntime, gather_all, get_runtime
from gecko_factory.llm.settings import LLMSettings
from gecko_factory.mine import Candidate, cosine_lookup, mine, reserve
from gecko_factory.plan import RunPlan
from gecko_factory.progress import SeedProgress
from gecko_factory.schemas import FretCandidate, FretRow, ShardStats
from gecko_factory.shards import commit_shard, done_marker, hash_ids, record_failure, shard_config_hash
from gecko_factory.synthesize import REJECTED, SynthesisResult, Synthesized, synthesize_one

log = logging.getLogger(__name__)

# Seeds per pipeline group (see _run_shard). Small enough that the first judge calls start
# after a few syntheses; large enough that the encoder's forward pass is not mostly overhead.
PIPELINE_GROUP = 16
# Query encoding gets its own thread: the encoder runs one forward at a time anyway, and queued
# groups parked in the loop's default pool starved the shard commits behind them (a finished
# shard waited 1-2.5 s to write its file; bench/e2e.py).
ENCODE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gecko-encode")


@dataclass(frozen=True)
class ShardJob:
    run_dir: Path
    shard: int
    base_url: str
    index_path: Path
    judge_mode: JudgeMode
    cache_path: Path | None = None  # None: --no-cache
    cache_read: bool = True  # False: --refresh-cache (ask again, overwrite)
    invocation: str = ""  # one id per flow run: its shards share one budget
    budget_usd: float | None = None
    max_tokens: int | None = None


@dataclass
class ShardReport:
    shard: int
    status: str  # "done" (written now) | "reused" (marker matched: its stats are the commit's)
    rows: int
    stats: ShardStats

    def as_dict(self) -> dict:
        return {"shard": self.shard, "status": self.status, "rows": self.rows, **self.stats.as_dict()}


def example_id(seed_id: str, task: str, query: str) -> str:
    return sha256_hex(seed_id, task, query, length=20)


class ShardStopped(Exception):
    """The run was stopped while the shard ran (not an outage: Prefect does not retry it)."""


def run_shard(job: ShardJob, settings: LLMSettings) -> ShardReport:
    plan = RunPlan.load(job.run_dir)
    seed_ids = plan.shards[job.shard]
    input_hash = hash_ids(seed_ids)
    # the judge mode actually used (the probe may fall back to rc_only) is part of the output
    config_hash = shard_config_hash(plan.config_hash, job.judge_mode)
    marker = done_marker(job.run_dir, job.shard, input_hash, config_hash)
    if marker is not None:
        return ShardReport(job.shard, "reused", marker.rows, marker.stats)
    runtime = get_runtime()
    # seeds done and LLM usage, for the CLI's live display and the fret-progress artifact
    progress = SeedProgress(job.run_dir, job.shard, len(seed_ids), settings.prices())
    try:
        return runtime.run(progress.watch(_run_shard(job, runtime, settings, plan, seed_ids, input_hash,
                                                     config_hash, progress)), tag=job.invocation or None)
    except BudgetExhausted:
        raise  # not a failure: the shard stays pending for `resume`
    except concurrent.futures.CancelledError as exc:  # LLMRuntime.cancel_all: the run is stopping
        stopped = ShardStopped("the run was stopped (SIGTERM or Ctrl-C) while this shard ran; "
                               "nothing of it was committed: `gecko-factory resume` redoes it")
        record_failure(job.run_dir, job.shard, stopped)
        raise stopped from exc
    except BaseException as exc:
        record_failure(job.run_dir, job.shard, exc)
        raise


async def _run_shard(job: ShardJob, runtime: LLMRuntime, settings: LLMSettings, plan: RunPlan,
                     seed_ids: list[str], input_hash: str, config_hash: str,
                     progress: SeedProgress) -> ShardReport:
    t0 = time.perf_counter()
    cfg = plan.config
    # The first load of each is seconds of disk and CPU: keep it off this loop, which carries
    # every shard's LLM calls (each is cached per process).
    corpus = await asyncio.to_thread(open_corpus, job.run_dir)
    index = await asyncio.to_thread(load_index, job.index_path)
    encoder = await asyncio.to_thread(Encoder.load, cfg.encoder)
    client = runtime.client(settings, job.base_url, job.cache_path, job.cache_read,
                            (job.invocation, job.budget_usd, job.max_tokens))  # shared pool and limit, own usage
    judge_client = client.with_model(cfg.judge_model)  # same pool, cache, budget and usage
    progress.usage = client.usage.as_dict
    synth = SynthesisResult()
    judge_rejected = 0

    async def judge_one(s: Synthesized, candidates: list[Candidate],
                        spare: list[Candidate]) -> FretRow | Skip | None:
        nonlocal judge_rejected
        # each candidate read once from the store: the row takes its positive and negative here
        paragraphs = {c.id: corpus[c.id] for c in candidates}
        pool = [as_scored(c, corpus[c.id]) for c in spare]  # unjudged; empty without a guard
        cosine = cosine_lookup([*candidates, *spare])
        if cfg.negative_guard is not None and not negative_possible(
                [as_scored(c, paragraphs[c.id]) for c in candidates], pool, s.paragraph.id,
                cfg.negative_guard, cosine):
            progress.seed_done()  # the same skip the judged seed would get, without the judge
            return Skip(NO_SAFE_NEGATIVE)
        try:
            judged = await judge(judge_client, s.query, [(c, paragraphs[c.id]) for c in candidates],
                                 job.judge_mode, cfg.judge_passage_chars)
        except LLMRequestRejected as exc:  # this seed's prompt; a service failure fails the shard
            judge_rejected += 1
            log.warning("shard %05d: %s: judge request refused: %s", job.shard, s.paragraph.id, exc)
            progress.seed_done()
            return None
        progress.seed_done()
        return _row(s, judged, cfg, job.judge_mode, paragraphs, pool, cosine, corpus)

    # Groups pipeline: a group's queries are embedded and mined (in a thread) as soon as its own
    # syntheses are in, and its judge calls start while other groups still synthesise, so the
    # LLM never idles behind a shard-wide stage barrier. A group is fixed by seed order, not by
    # timing: the encoder's output moves in the last bits with the batch it is in, and that
    # must not make a rerun mine other candidates.
    async def group(paragraphs: list[Paragraph]) -> list[FretRow | Skip | None]:
        done = await gather_all(*(synthesize_one(client, p, cfg, synth) for p in paragraphs))
        ok = [s for s in done if s is not None]  # the others are counted in synth.skipped
        progress.seed_done(len(paragraphs) - len(ok))
        if not ok:
            return []
        def mine_group() -> tuple[list[list[Candidate]], list[list[Candidate]]]:
            vectors = encoder.encode([s.query for s in ok], cfg.embed_batch_size, threads=1)
            mined = mine(index, vectors, [s.paragraph.id for s in ok], cfg.candidates, cfg.index.ef_search)
            pool = cfg.negative_pool if cfg.negative_guard is not None else 0
            return mined, reserve(index, vectors, mined, pool, cfg.index.ef_search)

        mined, spares = await asyncio.get_running_loop().run_in_executor(ENCODE_THREAD, mine_group)
        return await gather_all(*(judge_one(s, c, r) for s, c, r in zip(ok, mined, spares)))

    seeds = [corpus[i] for i in seed_ids]
    # one seed's service failure cancels the rest: the shard fails as a whole and commits nothing
    groups = await gather_all(*(group(seeds[g : g + PIPELINE_GROUP])
                                    for g in range(0, len(seeds), PIPELINE_GROUP)))
    results = [r for rows in groups for r in rows if r is not None]
    rows = [r for r in results if not isinstance(r, Skip)]
    for line in synth.errors:
        log.warning("shard %05d: %s", job.shard, line)
    skipped = Counter(synth.skipped)
    skipped.update(r.reason for r in results if isinstance(r, Skip))  # e.g. no safe negative
    if judge_rejected:
        skipped[REJECTED] += judge_rejected

    if len(rows) + sum(skipped.values()) != len(seed_ids):
        raise RuntimeError(f"shard {job.shard}: accounting broken: {len(seed_ids)} seeds != "
                           f"{len(rows)} rows + {dict(skipped)} skipped")
    stats = ShardStats(seeds=len(seed_ids), skipped=dict(skipped),
                       relabelled=sum(r.relabelled for r in rows), usage=client.usage.as_dict(),
                       seconds=round(time.perf_counter() - t0, 3), judge_mode=job.judge_mode,
                       unjudged_negatives=sum(not r.candidate(r.negative_id).judged for r in rows))
    await asyncio.to_thread(commit_shard, job.run_dir, job.shard, rows, input_hash,
                            config_hash, stats)
    return ShardReport(job.shard, "done", len(rows), stats)


@dataclass(frozen=True)
class Skip:
    """A judged seed that makes no row, and why (counted in the shard's skips)."""

    reason: str


def _row(s: Synthesized, judged: list[JudgedCandidate], cfg, judge_mode: str,
         paragraphs: dict[str, Paragraph], pool: list[JudgedCandidate],
         cosine: Callable[[str, str], float | None], corpus) -> FretRow | Skip:
    pick: Decision = decide(judged, cfg.fusion, cfg.negative_guard, s.paragraph.id, cfg.negative,
                            key=f"{cfg.seed}:{s.paragraph.id}:{s.query}", cosine=cosine)
    candidates = [FretCandidate(id=j.id, retrieval_rank=j.retrieval_rank, similarity=j.similarity,
                                ql=j.ql, rc=j.rc, fused_score=f, fused_rank=r)
                  for j, f, r in zip(judged, pick.fused, pick.fused_ranks)]
    negative = pick.negative
    if negative is None:  # no judged candidate is safe: the nearest safe neighbour beyond them
        negative = reserve_negative(pool, pick.positive, s.paragraph.id, cfg.negative_guard, cosine)
        if negative is None:
            return Skip(NO_SAFE_NEGATIVE)
        paragraphs = {**paragraphs, negative.id: corpus[negative.id]}
        # recorded as a candidate the judge did not score: no QL or RC, ranked after every judged one
        candidates.append(FretCandidate(id=negative.id, retrieval_rank=negative.retrieval_rank,
                                        similarity=negative.similarity, ql=None, rc=None,
                                        fused_score=0.0, fused_rank=len(judged) + 1))
    pos, neg = paragraphs[pick.positive.id], paragraphs[negative.id]
    return FretRow(
        example_id=example_id(s.paragraph.id, s.task, s.query),
        seed_id=s.paragraph.id,
        task_type=s.task_type,
        task=s.task,
        query=s.query,
        positive_id=pos.id,
        positive_title=pos.title,
        positive_text=pos.text,
        negative_id=neg.id,
        negative_title=neg.title,
        negative_text=neg.text,
        relabelled=pos.id != s.paragraph.id,
        candidates=candidates,
        judge_mode=judge_mode,
        fusion=cfg.fusion.spec(),
        llm_model=cfg.llm_model,
        judge_model=cfg.judge_model or cfg.llm_model,
        prompt_version="+".join(sorted(cfg.prompt_versions.values())),
    )
