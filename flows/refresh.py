"""The scheduled refresh: a data-set root of versions, extended by the paragraphs that are new.

plan-refresh (no LLM) → the FRet flow on the new and changed paragraphs only, as a subflow, over
an index of the whole current corpus → commit-version (version.json lists reused and new shards)
→ optionally training on the new version. A refresh with nothing new makes no LLM call and no
version. This is what the `fret-refresh` deployment runs on its cron schedule.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from gecko_factory.llm.embedded import client_settings
from gecko_factory.lock import run_lock
from flows.fret import absolute_corpus, fret_config, fret_flow, trigger_training
from tasks.refresh_tasks import commit_version_task, plan_refresh_task


@flow(name="fret-refresh", flow_run_name="refresh-{root}")
def refresh_flow(
    root: str = "datasets/sample",
    corpus: str = "sample",
    limit: int | None = None,
    candidates: int = 20,
    shard_size: int = 256,
    judge_mode: str = "two_prompt",
    negative: str = "lowest",
    seed: int = 0,
    cache: str = "on",
    budget_usd: float | None = None,
    max_tokens: int | None = None,
    train_after: bool = False,
    train_params: dict | None = None,
) -> dict:
    """`limit` caps the new seeds of one refresh; the rest stay new for the next one."""
    logger = get_run_logger()
    corpus = absolute_corpus(corpus)
    # The recipe's hash decides whether earlier versions can be reused (same as fret_flow's plan).
    # the models as the flow will see them (the embedded server's names included)
    settings = client_settings()
    config = fret_config(corpus, candidates, judge_mode, negative, seed, settings.model,
                         judge_model=settings.judge_model)
    Path(root).mkdir(parents=True, exist_ok=True)
    with run_lock(Path(root)):  # one refresh at a time per data set
        plan = plan_refresh_task(str(Path(root).resolve()), config.model_dump(mode="json"))
        if not plan["changed"]:
            logger.info("no new or changed paragraphs since %s: no LLM call, no new version",
                        plan["previous"])
            return {"version": plan["previous"], "new_version": False, "llm_calls": 0}
        manifest = None
        if plan["new_seeds"]:
            manifest = fret_flow(run_dir=plan["run_dir"], corpus=corpus, limit=limit,
                                 seed_ids_file=plan["seed_ids_file"], candidates=candidates,
                                 shard_size=shard_size, judge_mode=judge_mode, negative=negative,
                                 seed=seed, cache=cache, budget_usd=budget_usd,
                                 max_tokens=max_tokens)
            if manifest.get("stopped"):
                # Not committed: the next refresh resumes this version's shards from their markers.
                return {"version": None, "new_version": False, "stopped": manifest["stopped"]}
        record = commit_version_task(plan["plan"], corpus, config.output_hash(), manifest)
    record["new_version"] = True
    if train_after:
        record["training"] = trigger_training(plan["run_dir"], train_params or {})
    return record
