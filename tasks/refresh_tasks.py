"""Prefect tasks of an incremental refresh: what changed in the corpus, then commit the version.

Both are local file work (no LLM, no network): no retries; NO_CACHE because the answer depends on
the corpus and the versions on disk, not on the task's arguments.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from gecko_factory.config import FretConfig
from gecko_factory.versions import RefreshPlan, commit_version, plan_refresh, prepare_run_dir


@task(name="plan-refresh", cache_policy=NO_CACHE, tags=["fret", "refresh"])
def plan_refresh_task(root: str, config: dict) -> dict:
    """Compare the corpus with the latest version; returns a summary and the saved plan's path."""
    cfg = FretConfig.model_validate(config)
    plan = plan_refresh(Path(root), cfg.corpus, cfg.output_hash())
    logger = get_run_logger()
    if plan.config_changed:
        logger.warning("the recipe changed since %s (LLM, N, prompts...): nothing is reused, every "
                       "paragraph is processed again", plan.previous)
    path = None
    if plan.changed:
        prepare_run_dir(plan)
        path = str(plan.save())
    kept = sum(s["rows"] for s in plan.reused)
    logger.info("refresh %s: %d paragraphs, %d new or changed, %d examples kept from %s, %d dropped",
                plan.version, plan.corpus_count, len(plan.new_seed_ids), kept, plan.previous,
                plan.dropped_examples)
    return {"version": plan.version, "previous": plan.previous, "plan": path,
            "run_dir": str(plan.run_dir), "seed_ids_file": str(plan.seed_ids_file),
            "new_seeds": len(plan.new_seed_ids), "dropped_examples": plan.dropped_examples,
            "kept_examples": kept, "changed": plan.changed}


@task(name="commit-version", cache_policy=NO_CACHE, tags=["fret", "refresh"])
def commit_version_task(plan_path: str, corpus: str, config_hash: str,
                        manifest: dict | None) -> dict:
    record = commit_version(RefreshPlan.load(Path(plan_path)), corpus, config_hash, manifest)
    get_run_logger().info("version %s: %d examples (%d new, %d reused, %d dropped)",
                          record["version"], record["examples"], record["new_examples"],
                          record["reused_examples"], record["dropped_examples"])
    return {k: v for k, v in record.items() if k not in ("shards", "seed_hashes")}
