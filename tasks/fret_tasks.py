"""Prefect tasks around the library's FRet stages. Small in, small out: paths, ids, dicts.

Caching: every task here uses NO_CACHE on purpose. Resume is done by the shard markers, which
check the file on disk and the hashes of inputs and config; a Prefect result cache keyed on the
task inputs would skip a shard whose file was since deleted or changed.
Retries: only on failures of the service (the server went away, timed out, or said 5xx/429
beyond the client's own retries: `LLMServiceError`); a bug or a bad config fails at once. The
shard task's retries and their delays come from the LLM settings (`outage_retry_delays_s`,
applied by the flow): a shard that fails leaves nothing committed, so a retry or `resume` redoes
exactly it, and the request cache makes the calls it had finished free.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from gecko_factory.config import FretConfig
from gecko_factory.shard_pipeline import ShardJob, run_shard
from gecko_factory.index import IndexRequest, build_index
from gecko_factory.llm.client import LLMClient, LLMServiceError
from gecko_factory.llm.settings import client_settings
from gecko_factory.llm.settings import LLMSettings
from gecko_factory.manifest import write_manifest
from gecko_factory.paths import gecko_home
from gecko_factory.plan import RunPlan, plan_run
from gecko_factory.progress import index_progress_file


def llm_cache_path(run_dir: Path) -> Path:
    """`GECKO_LLM_CACHE` (one cache shared by many runs), else the run folder's own."""
    return Path(os.environ.get("GECKO_LLM_CACHE") or run_dir / "cache" / "llm.sqlite")


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry an outage of the service, not bugs or bad requests."""
    try:
        state.result()
    except (LLMServiceError, httpx.TransportError, ConnectionError, TimeoutError):
        return True
    except Exception:  # noqa: BLE001 - any other failure is not worth a retry
        return False
    return False


@task(name="plan-run", cache_policy=NO_CACHE, tags=["fret"])
def plan_task(config: dict, run_dir: str, force: bool = False) -> dict:
    plan = plan_run(FretConfig.model_validate(config), Path(run_dir), force=force)
    get_run_logger().info(
        "planned %d seeds in %d shards over %d paragraphs (corpus %s, config %s)",
        plan.seed_count, len(plan.shards), plan.corpus_count, plan.corpus_hash[:12], plan.config_hash[:12],
    )
    return {"shards": len(plan.shards), "seeds": plan.seed_count, "paragraphs": plan.corpus_count}


@task(name="build-index", cache_policy=NO_CACHE, tags=["fret", "cpu"])
def index_task(run_dir: str) -> dict:
    plan = RunPlan.load(Path(run_dir))
    cfg = plan.config
    info = build_index(IndexRequest(
        corpus_path=Path(run_dir) / "corpus.parquet", corpus_hash=plan.corpus_hash,
        encoder=cfg.encoder, params=cfg.index, cache_dir=gecko_home() / "indexes",
        batch_size=cfg.embed_batch_size, progress_file=index_progress_file(Path(run_dir)),
    ))
    get_run_logger().info("index %s: %d vectors (%s)", info.path, info.count,
                          "reused" if info.reused else f"embedded in {info.embed_seconds:.1f}s")
    return {"path": str(info.path), "count": info.count, "reused": info.reused,
            "embed_seconds": round(info.embed_seconds, 2)}


@task(name="probe-llm", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=retry_if_transient, tags=["fret", "llm"])
def probe_task(base_url: str, judge_mode: str) -> str:
    """Fail fast on an unreachable server; pick RC-only judging when there are no prompt log-probs."""
    async def probe() -> str:
        settings = client_settings()
        # the judge reads the log-probs: ask its model (it may not be the writer)
        client = LLMClient(settings, base_url, max_retries=1).with_model(settings.judge_model)
        try:
            await client.check_reachable()
            if await client.supports_prompt_logprobs():
                return judge_mode
            return "rc_only"
        finally:
            await client.aclose()

    mode = asyncio.run(probe())
    if mode != judge_mode:
        get_run_logger().warning("the LLM server gives no prompt log-probs: judging is RC-only "
                                 "(relevance classification without query likelihood)")
    return mode


@task(name="fret-shard", cache_policy=NO_CACHE, retry_condition_fn=retry_if_transient,
      tags=["fret", "llm"])  # retries: `shard_retries`, from the LLM settings
def shard_task(run_dir: str, shard: int, base_url: str, index_path: str, judge_mode: str,
               cache: str = "on", invocation: str = "", budget_usd: float | None = None,
               max_tokens: int | None = None) -> dict:
    """`cache`: on | off | refresh (see `llm_cache_path`); the budget is per invocation."""
    job = ShardJob(Path(run_dir), shard, base_url, Path(index_path), judge_mode,  # type: ignore[arg-type]
                   cache_path=None if cache == "off" else llm_cache_path(Path(run_dir)),
                   cache_read=cache != "refresh", invocation=invocation, budget_usd=budget_usd,
                   max_tokens=max_tokens)
    report = run_shard(job, client_settings())
    logger = get_run_logger()
    if report.status == "reused":
        logger.info("shard %05d: already done (%d rows), skipped", shard, report.rows)
    else:
        logger.info("shard %05d: %d rows, skipped %s, %d LLM calls (+%d from cache) in %.1fs",
                    shard, report.rows, report.stats.skipped or "none", report.stats.usage.get("calls", 0),
                    report.stats.usage.get("cache_hits", 0), report.stats.seconds)
    return report.as_dict()


def shard_retries(settings: LLMSettings) -> dict:
    """`shard_task.with_options(**shard_retries(settings))`: one retry after each outage delay."""
    delays = list(settings.outage_retry_delays_s)
    return {"retries": len(delays), "retry_delay_seconds": delays or 0}


@task(name="write-manifest", cache_policy=NO_CACHE, tags=["fret"])
def manifest_task(run_dir: str, extra: dict) -> dict:
    return write_manifest(Path(run_dir), extra)
